"""The core behaviour over a served emulator on both transports, and what is aiohttp's own."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator

import aiohttp
import anyio
import pytest
import trio
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from quickchat_async import (
    AiohttpTransport,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncQuickchat,
    AuthenticationError,
    ChatRequest,
    ClientClosedError,
    InternalServerError,
    QuickchatError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    Timeout,
    TurnStatus,
    UnexpectedResponseError,
)
from quickchat_async._transports._aiohttp import _error
from quickchat_async._version import __version__
from quickchat_async.emulator import EmulatorService, Fault, ServerHandle, serve
from quickchat_async.testing import Emulator

from .test_transport import _serve


pytestmark = pytest.mark.anyio
__all__ = ["_serve"]  # the loopback server fixture, shared with test_transport


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[EmulatorService, ServerHandle]]:
    """One emulator served on loopback for the module; each test starts from a reset."""
    service = EmulatorService()
    handle = serve(service)
    yield service, handle
    handle.stop()


@pytest.fixture(name="emulator")
def _emulator(served: tuple[EmulatorService, ServerHandle]) -> EmulatorService:
    served[0].reset()
    return served[0]


@pytest.fixture(name="url")
def _url(served: tuple[EmulatorService, ServerHandle]) -> str:
    return served[1].base_url


def connect(url: str, transport_name: str, *, flavor: str = "token", **kwargs) -> AsyncQuickchat:
    credential = {"token": "demo-token", "api_key": "demo-key"}[flavor]
    return AsyncQuickchat(
        scenario_id="demo",
        base_url=url,
        transport=transport_name,
        **{flavor: credential},
        **kwargs,
    )


class TestCoreOverLoopback:
    async def test_conversation_turns(self, emulator, url, transport_name):
        """A conversation keeps its conv_id and sends kb_topic and metadata on every turn."""
        async with connect(url, transport_name) as client:
            conv = client.conversation(kb_topic="billing", metadata={"user": "u-1"})
            await conv.say("Hello")
            reply = await conv.say("How do refunds work?")

        assert reply.conv_id == conv.conv_id
        assert "refund" in reply.text.lower()
        assert emulator.user_messages(reply.conv_id) == ("Hello", "How do refunds work?")
        sent = [m for m in emulator.messages(reply.conv_id) if m.client_metadata]
        assert {m.client_metadata["kb_topic"] for m in sent} == {"billing"}

    async def test_legacy_flavor(self, emulator, url, transport_name):
        """The api_key flavor works over the same transport."""
        async with connect(url, transport_name, flavor="api_key") as client:
            reply = await client.say("Hello", message_context="The user is on the pricing page.")

        assert emulator.user_messages(reply.conv_id) == ("Hello",)

    async def test_rate_limit_is_retried(self, emulator, url, transport_name):
        """A 429 with Retry-After is retried, and the turn succeeds once."""
        emulator.faults.script([Fault("rate_limit", retry_after=0), None])
        async with connect(url, transport_name) as client:
            reply = await client.say("Hello")

        assert emulator.user_messages(reply.conv_id) == ("Hello",)
        assert emulator.stats().by_status == {429: 1, 200: 1}

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"token": "wrong-token"}, AuthenticationError),
            ({"scenario_id": "no-such-agent"}, ScenarioNotFoundError),
        ],
    )
    async def test_error_statuses(self, url, transport_name, options, error):
        """The server's refusals map onto the same error tree."""
        options = {"token": "demo-token", "scenario_id": "demo", **options}
        async with AsyncQuickchat(base_url=url, transport=transport_name, **options) as client:
            with pytest.raises(error):
                await client.say("Hello")

    async def test_dropped_turn_is_unconfirmed_then_settled(self, emulator, url, transport_name):
        """A drop after the turn was recorded is ambiguous; the next reply settles it."""
        async with connect(url, transport_name) as client:
            conv = client.conversation()
            await conv.say("one")
            emulator.faults.script(["drop_after"])
            with pytest.raises(APIConnectionError) as info:
                await conv.say("two")
            await conv.say("three")

        assert info.value.outcome_unknown
        assert [turn.status for turn in conv.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ("truncated", APIConnectionError),
            ("reset_mid_body", APIConnectionError),
            ("not_json", UnexpectedResponseError),
            ("html_502", InternalServerError),
        ],
    )
    async def test_broken_replies(self, emulator, url, transport_name, fault, error):
        """Cut, reset and malformed replies raise the same errors, never retried by default."""
        emulator.faults.script([fault])
        async with connect(url, transport_name) as client:
            with pytest.raises(error) as info:
                await client.say("Hello")

        assert info.value.outcome_unknown
        assert emulator.stats().requests == 1

    # Under trio, httpx's nested body generators are left for the GC when the SDK stops reading
    # at the cap (trio then warns; asyncio closes them quietly). Known, and harmless.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    @pytest.mark.parametrize("fault", ["huge_body", Fault("endless", interval=0.001)])
    async def test_body_is_capped(self, emulator, url, transport_name, fault):
        """A body over max_response_bytes, declared or endless, stops at the cap."""
        emulator.faults.script([fault])
        async with connect(url, transport_name, max_response_bytes=64 * 1024) as client:
            with anyio.fail_after(10), pytest.raises(ResponseTooLargeError):
                await client.say("Hello")
            emulator.faults.script([None])
            assert (await client.say("Hello again")).text  # the client is still usable

    async def test_slow_headers_time_out(self, emulator, url, transport_name):
        """Headers later than the deadline: APITimeoutError, outcome unknown."""
        emulator.faults.script([Fault("slow_headers", delay=2)])
        async with connect(url, transport_name, timeout=0.3) as client:
            with anyio.fail_after(5), pytest.raises(APITimeoutError) as info:
                await client.say("Hello")

        assert info.value.outcome_unknown


class TestServedEmulator:
    async def test_both_flavors_through_the_testing_helper(self, transport_name):
        """`async with Emulator()` serves on loopback; its clients use either transport."""
        emulator = Emulator()
        async with emulator:
            assert emulator.served
            assert emulator.base_url in repr(emulator)
            for flavor in ("current", "legacy"):
                async with emulator.client(flavor=flavor, transport=transport_name) as client:
                    reply = await client.say(f"Hello from {flavor}")
                assert emulator.user_messages(reply.conv_id) == (f"Hello from {flavor}",)
            with pytest.raises(RuntimeError, match="already served"):
                await emulator.start()
        assert not emulator.served


class TestRawResponses:
    async def test_redirect_not_followed(self, serve, transport_name):
        """A 3xx is an error naming the target; the credential never goes there."""

        async def redirect(stream, request):
            await stream.send(
                b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\n"
                b"Content-Length: 0\r\n\r\n"
            )

        server = await serve(redirect)
        client = AsyncQuickchat(
            token="t", scenario_id="s", base_url=server.url, transport=transport_name
        )
        async with client:
            with pytest.raises(APIStatusError, match="redirect"):
                await client.say("Hello")

        assert len(server.requests) == 1

    @pytest.mark.parametrize("custom", [False, True])
    async def test_user_agent_names_the_engine(self, serve, transport_name, custom):
        """The User-Agent names the SDK and the HTTP engine in use, unless the caller sets one."""

        async def ok(stream, request):
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 29\r\n"
                b'\r\n{"conv_id":"c","reply":"Hi!"}'
            )

        server = await serve(ok)
        headers = {"user-agent": "my-bot/1.0"} if custom else None
        client = AsyncQuickchat(
            token="t",
            scenario_id="s",
            base_url=server.url,
            transport=transport_name,
            default_headers=headers,
        )
        async with client:
            await client.say("Hello")

        head = server.requests[0].partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
        agents = [line.split(":", 1)[1].strip() for line in head if line.startswith("user-agent:")]
        other = "httpx" if transport_name == "aiohttp" else "aiohttp"
        if custom:
            assert agents == ["my-bot/1.0"]
        else:
            assert len(agents) == 1
            assert agents[0].startswith(f"quickchat-async/{__version__} {transport_name}/")
            assert other not in agents[0]

    # Under trio, httpx's nested body generators are left for the GC when the SDK stops reading
    # at the cap (trio then warns; asyncio closes them quietly). Known, and harmless.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    @pytest.mark.parametrize(("size", "too_large"), [(100, False), (200_000, True)])
    async def test_compressed_body_capped_after_decoding(
        self, serve, transport_name, size, too_large
    ):
        """A gzip body is decoded; the cap applies to the decoded size (no zip bombs)."""
        body = gzip.compress(b'{"conv_id":"c","reply":"' + b"a" * size + b'"}')

        async def gzipped(stream, request):
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

        server = await serve(gzipped)
        client = AsyncQuickchat(
            token="t",
            scenario_id="s",
            base_url=server.url,
            transport=transport_name,
            max_response_bytes=64 * 1024,
        )
        async with client:
            if too_large:
                with pytest.raises(ResponseTooLargeError):
                    await client.say("Hello")
            else:
                assert len((await client.say("Hello")).text) == size


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
class TestAiohttpTransport:
    async def test_caller_session_stays_open(self, url):
        """A caller's session is used and left open, unless handed over."""
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session)
            async with connect(url, transport) as client:
                assert (await client.say("Hello")).text
            assert transport.session is session
            assert not session.closed

            handed = AiohttpTransport(session, close_session=True)
            await handed.aclose()
            assert session.closed

    async def test_closed_transport_refuses(self):
        """A closed transport raises ClientClosedError; closing twice is harmless."""
        transport = AiohttpTransport(max_connections=3)
        assert repr(transport) == "<AiohttpTransport unopened max_connections=3>"
        await transport.aclose()
        await transport.aclose()

        assert repr(transport) == "<AiohttpTransport closed max_connections=3>"
        with pytest.raises(ClientClosedError):
            await transport.send(ChatRequest("http://127.0.0.1:9/chat", {}, b"{}"))

    async def test_transport_alone(self, url):
        """The transport sends a request on its own, opening its session on first use."""
        async with AiohttpTransport() as transport:
            response = await transport.send(
                ChatRequest(
                    f"{url}/chat",
                    {"Authorization": "Bearer demo-token", "Content-Type": "application/json"},
                    b'{"scenario_id":"demo","text":"Hi"}',
                )
            )
            assert repr(transport).startswith("<AiohttpTransport open")
            assert transport.session is not None
            async with transport.session.get(f"{url}/_emulator/stats") as stats:
                assert stats.status == 200  # the session also works outside send()

        assert response.status_code == 200
        assert b"conv_id" in response.content
        assert response.headers["content-type"] == response.headers["Content-Type"]

    async def test_deadline_while_connecting_is_not_sent(self, monkeypatch, url):
        """A deadline that ends while connecting is safe to retry: nothing went out."""

        async def never(self, req, traces, timeout):  # noqa: ASYNC109 -- aiohttp's signature
            await anyio.sleep_forever()

        monkeypatch.setattr(aiohttp.TCPConnector, "connect", never)
        async with AiohttpTransport() as transport:
            request = ChatRequest(f"{url}/chat", {}, b"{}", Timeout(total=0.2, connect=None))
            with pytest.raises(APITimeoutError, match="per-attempt deadline") as info:
                await transport.send(request)

        assert not info.value.outcome_unknown

    async def test_many_deadlines_are_cached_boundedly(self):
        """aiohttp timeouts are built once per Timeout, for a bounded number of them."""
        transport = AiohttpTransport()
        for n in range(100):
            transport._timeout(Timeout(total=1 + n, connect=2))
        assert transport._timeout(Timeout(total=1, connect=2)).sock_connect == 2
        assert len(transport._timeouts) == 64


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_refused_on_trio():
    """Under trio, the aiohttp transport says to use httpx instead."""
    with pytest.raises(RuntimeError, match="asyncio only, not on trio"):
        AsyncQuickchat(token="t", scenario_id="s", transport="aiohttp")


def test_refused_on_trio_at_first_send():
    """Made outside any loop and used under trio, it fails at once with the same advice."""
    transport = AiohttpTransport()

    async def main() -> None:
        await transport.send(ChatRequest("http://127.0.0.1:9/chat", {}, b"{}"))

    with pytest.raises(RuntimeError, match="asyncio only"):
        trio.run(main)


def test_refused_outside_a_loop():
    """Sending needs a running asyncio loop (the session binds to it)."""
    transport = AiohttpTransport()
    with pytest.raises(RuntimeError, match="no event loop"):
        transport._open()


def test_missing_aiohttp_says_what_to_install(monkeypatch):
    """Without aiohttp installed, choosing it names the extra to install."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(ImportError, match=r"quickchat-async\[aiohttp\]"):
        AsyncQuickchat(token="t", scenario_id="s", transport="aiohttp")


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("exc", "cls", "unknown", "words"),
        [
            (
                aiohttp.ConnectionTimeoutError("slow"),
                APITimeoutError,
                False,
                "timed out connecting",
            ),
            (aiohttp.InvalidURL("nope"), APIConnectionError, False, "cannot use the URL"),
            (aiohttp.SocketTimeoutError("slow"), APITimeoutError, True, "waiting for the reply"),
            (aiohttp.ServerTimeoutError("slow"), APITimeoutError, True, "timed out talking"),
            (aiohttp.ServerDisconnectedError(), APIConnectionError, True, "lost the connection"),
            (aiohttp.ClientPayloadError("cut"), APIConnectionError, True, "cut-short reply"),
            (aiohttp.ClientOSError(104, "reset"), APIConnectionError, True, "lost the connection"),
            (aiohttp.ClientError("odd"), APIConnectionError, True, "failed talking"),
        ],
    )
    def test_each_error(self, exc, cls, unknown, words):
        """Each aiohttp error maps to one class, with whether the message may have landed."""
        error = _error(exc, "http://127.0.0.1:1/chat", may_be_sent=True)

        assert type(error) is cls
        assert error.outcome_unknown is unknown
        assert words in error.message
        assert isinstance(error, QuickchatError)

    def test_malformed_response(self):
        """aiohttp's response errors (a bad status line) are a malformed response."""
        url = yarl.URL("http://127.0.0.1:1/chat")
        info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
        exc = aiohttp.ClientResponseError(info, (), status=400, message="bad")
        error = _error(exc, "u", may_be_sent=False)

        assert "malformed" in error.message
        assert not error.outcome_unknown
