"""AiohttpTransport: what is aiohttp's own (its session, asyncio only, its errors).

What every engine shares is in test_contract.py; this transport runs there on asyncio.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import anyio
import anyio.abc
import pytest
import trio
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from quickchat_async import (
    AiohttpTransport,
    APIConnectionError,
    APITimeoutError,
    AsyncQuickchat,
    AuthenticationError,
    ChatRequest,
    ClientClosedError,
    QuickchatError,
    Timeout,
)
from quickchat_async._transports._aiohttp import _error
from quickchat_async.testing import Emulator
from tests.conftest import API_KEY, SCENARIO_ID, TOKEN

from .conftest import Serve, blackhole, header_values, ok_response


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is an asyncio library."""
    return "asyncio"


def chat_request(url: str, timeout: Timeout | None = None) -> ChatRequest:
    """A current-flavor request for the test scenario."""
    return ChatRequest(
        f"{url}/chat",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        b'{"scenario_id":"%s","text":"Hi"}' % SCENARIO_ID.encode(),
        timeout or Timeout(),
    )


class TestSession:
    async def test_opened_on_first_use(self, served: Emulator):
        """The transport sends on its own, opening its session on the first request."""
        async with AiohttpTransport() as transport:
            assert transport.session is None
            response = await transport.send(chat_request(served.base_url))
            assert repr(transport).startswith("<AiohttpTransport open")
            assert transport.session is not None
            async with transport.session.get(f"{served.base_url}/_emulator/stats") as stats:
                assert stats.status == 200  # the session also works outside send()

        assert response.status_code == 200
        assert b"conv_id" in response.content
        assert response.headers["content-type"] == response.headers["Content-Type"]

    async def test_callers_session_stays_open(self, served: Emulator):
        """A caller's session is used and left open, unless handed over."""
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session)
            async with served.client(transport=transport) as client:
                assert (await client.say("Hello")).text
            assert transport.session is session
            assert not session.closed

            handed = AiohttpTransport(session, close_session=True)
            await handed.aclose()
            assert session.closed

    async def test_callers_closed_session(self, served: Emulator):
        """A caller's session closed under the client is ClientClosedError: nothing was sent."""
        session = aiohttp.ClientSession()
        async with served.client(transport=AiohttpTransport(session)) as client:
            await session.close()
            with pytest.raises(ClientClosedError, match=r"ClientSession .* is closed") as info:
                await client.say("Hello")

        assert not info.value.outcome_unknown
        assert served.stats().requests == 0

    async def test_callers_session_cannot_tell_connecting(self):
        """With a caller's session, a deadline hit while connecting counts as maybe sent."""
        with blackhole() as port:
            async with aiohttp.ClientSession() as session, AiohttpTransport(session) as transport:
                request = chat_request(f"http://127.0.0.1:{port}", Timeout(total=0.2, connect=None))
                with anyio.fail_after(4), pytest.raises(APITimeoutError) as info:
                    await transport.send(request)

        assert info.value.outcome_unknown

    async def test_a_requests_headers_go_with_it_only(self, serve: Serve):
        """Headers of one request never go out with the next.

        Not a per-call extra header, and not one client's credential with another client's
        request on a shared transport.
        """

        async def answer(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response())

        server = await serve(answer)
        transport = AiohttpTransport()
        options = {"scenario_id": SCENARIO_ID, "base_url": server.url, "transport": transport}
        async with (
            AsyncQuickchat(token=TOKEN, **options) as current,  # type: ignore[arg-type]
            AsyncQuickchat(api_key=API_KEY, **options) as legacy,  # type: ignore[arg-type]
        ):
            await current.say("first", extra_headers={"X-Tag": "this call only"})
            await current.say("second")
            await legacy.say("from the legacy client", conv_id="c-1")
            await current.say("third")

        first, second, from_legacy, third = server.requests
        assert header_values(first, "X-Tag") == ["this call only"]
        assert header_values(second, "X-Tag") == header_values(third, "X-Tag") == []
        assert header_values(from_legacy, "Authorization") == []
        assert header_values(third, "Authorization") == [f"Bearer {TOKEN}"]
        assert server.connections == 1  # both sessions share the owned connections

    async def test_callers_session_raising_for_status(self, served: Emulator):
        """A caller's session made with raise_for_status=True: still the SDK's typed errors.

        An error status is judged by the SDK (an auth failure here), not a connection error.
        """
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            client = AsyncQuickchat(
                token="not-the-token",
                scenario_id=SCENARIO_ID,
                base_url=served.base_url,
                transport=AiohttpTransport(session),
            )
            async with client:
                with pytest.raises(AuthenticationError):
                    await client.say("Hello")

    async def test_closed_transport_refuses(self):
        """A closed transport raises ClientClosedError; closing twice is harmless."""
        transport = AiohttpTransport(max_connections=3)
        assert repr(transport) == "<AiohttpTransport unopened max_connections=3>"
        await transport.aclose()
        await transport.aclose()

        assert repr(transport) == "<AiohttpTransport closed max_connections=3>"
        with pytest.raises(ClientClosedError):
            await transport.send(chat_request("http://127.0.0.1:9"))

    async def test_connect_limits_are_cached_boundedly(self):
        """aiohttp's connect limits are built once per value, for a bounded number of them."""
        transport = AiohttpTransport()
        for n in range(100):
            transport._timeout(Timeout(total=1, connect=1 + n))

        assert transport._timeout(Timeout(total=5, connect=2)).sock_connect == 2
        assert transport._timeout(Timeout(total=5, connect=2)).total is None
        assert len(transport._timeouts) == 8


class TestDeadlines:
    """Each attempt's deadline (`Timeout.total`), kept for all requests in flight by one timer."""

    @staticmethod
    async def answer_unless_slow(stream: anyio.abc.SocketStream, request: bytes) -> None:
        """Answer at once, except a request whose text is "slow": never answered."""
        if b'"text":"slow"' not in request:
            await stream.send(ok_response())
        else:
            await anyio.sleep_forever()

    @staticmethod
    def request(url: str, text: str, total: float) -> ChatRequest:
        return ChatRequest(
            f"{url}/chat",
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            b'{"text":"%s"}' % text.encode(),
            Timeout(total=total, connect=5),
        )

    async def test_each_request_its_own_deadline(self, serve: Serve):
        """A short deadline set after a long one still ends its request on time.

        The requests answered meanwhile are not disturbed.
        """
        server = await serve(self.answer_unless_slow)
        ended: dict[str, float] = {}
        async with AiohttpTransport() as transport:
            start = anyio.current_time()

            async def send(name: str, text: str, total: float) -> None:
                try:
                    await transport.send(self.request(server.url, text, total))
                    ended[name] = -1  # answered
                except APITimeoutError:
                    ended[name] = anyio.current_time() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "long", "slow", 1.2)
                await anyio.sleep(0.05)
                tg.start_soon(send, "short", "slow", 0.3)
                for n in range(5):
                    tg.start_soon(send, f"answered {n}", "fast", 0.3)

        assert 0.3 <= ended["short"] < 0.8
        assert 1.2 <= ended["long"] < 1.7
        assert [ended[f"answered {n}"] for n in range(5)] == [-1] * 5

    async def test_a_deadline_after_the_answer_changes_nothing(self, serve: Serve):
        """Once answered, a request's deadline is forgotten: nothing is cancelled later."""
        server = await serve(self.answer_unless_slow)
        async with AiohttpTransport() as transport:
            response = await transport.send(self.request(server.url, "fast", 0.1))
            await anyio.sleep(0.3)  # past the deadline: this very task goes on

        assert response.status_code == 200

    async def test_cancelled_by_someone_else_too(self, serve: Serve):
        """Cancelled from outside as the deadline comes: the cancellation wins, not a timeout."""
        server = await serve(self.answer_unless_slow)
        async with AiohttpTransport() as transport:
            task = asyncio.ensure_future(transport.send(self.request(server.url, "slow", 0.2)))
            await asyncio.sleep(0.2)  # the deadline's timer and this cancel come together
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async def test_wait_for_around_it(self, serve: Serve):
        """`asyncio.wait_for` shorter than the deadline ends the request with its TimeoutError."""
        server = await serve(self.answer_unless_slow)
        async with AiohttpTransport() as transport:
            with pytest.raises(TimeoutError) as caught:
                await asyncio.wait_for(
                    transport.send(self.request(server.url, "slow", 5)), timeout=0.1
                )

        assert not isinstance(caught.value, QuickchatError)


class TestAsyncioOnly:
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_refused_on_trio(self):
        """Under trio, the aiohttp transport says to use the default engine."""
        with pytest.raises(
            RuntimeError, match=r"asyncio only, not on trio.* default engine, httpx2"
        ):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport="aiohttp")

    def test_refused_on_trio_at_first_send(self):
        """Made outside any loop and used under trio, it fails at once with the same advice."""
        transport = AiohttpTransport()

        async def main() -> None:
            await transport.send(chat_request("http://127.0.0.1:9"))

        with pytest.raises(RuntimeError, match="asyncio only"):
            trio.run(main)

    def test_refused_outside_a_loop(self):
        """Sending needs a running asyncio loop (the session binds to it)."""
        sending = AiohttpTransport().send(chat_request("http://127.0.0.1:9"))

        with pytest.raises(RuntimeError, match="no event loop"):
            sending.send(None)
        sending.close()

    def test_missing_aiohttp_says_what_to_install(self, monkeypatch):
        """Without aiohttp installed, choosing it names the extra to install."""
        monkeypatch.setitem(sys.modules, "aiohttp", None)

        with pytest.raises(
            ImportError, match=r"quickchat-async\[aiohttp\].* default engine, httpx2"
        ):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport="aiohttp")


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
            (TimeoutError(), APITimeoutError, True, "per-attempt deadline"),
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


def chain(error: BaseException) -> list[BaseException]:
    """An exception and every exception it holds as its cause or its context, suppressed too."""
    found: list[BaseException] = []
    waiting: list[BaseException | None] = [error]
    while waiting:
        current = waiting.pop()
        if current is not None and current not in found:
            found.append(current)
            waiting += [current.__cause__, current.__context__]
    return found


class TestNoCredentialInTheChain:
    async def test_a_malformed_reply(self, serve: Serve):
        """aiohttp's response errors carry the request's headers (request_info): not chained."""

        async def garbage(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(b"NOT HTTP\r\n\r\n")

        server = await serve(garbage)
        async with AiohttpTransport() as transport:
            with pytest.raises(APIConnectionError) as info:
                await transport.send(chat_request(server.url))

        for exc in chain(info.value):
            assert TOKEN not in repr(exc)
            assert TOKEN not in repr(getattr(exc, "request_info", None))

    async def test_a_deadline(self, serve: Serve):
        """The cancellation a deadline turns into a timeout keeps no frame with the request."""

        async def silent(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await anyio.sleep_forever()

        server = await serve(silent)
        legacy = ChatRequest(  # the legacy flavor: the api_key is in the body
            f"{server.url}/chat",
            {"Content-Type": "application/json"},
            b'{"api_key":"%s","scenario_id":"%s","text":"Hi"}'
            % (API_KEY.encode(), SCENARIO_ID.encode()),
            Timeout(total=0.2),
        )
        async with AiohttpTransport() as transport:
            with pytest.raises(APITimeoutError) as info:
                await transport.send(legacy)

        for exc in chain(info.value):
            frame_locals = []
            traceback = exc.__traceback__
            while traceback is not None:
                if traceback.tb_frame is not sys._getframe():
                    frame_locals.append(repr(traceback.tb_frame.f_locals))
                traceback = traceback.tb_next
            assert not any(API_KEY in text for text in frame_locals)
