"""Httpx2Transport, the default engine: the request it builds, the body it reads, what it owns.

The server side is `httpx2.MockTransport` with small handler functions (the seam httpx2 gives
its users), or a loopback socket where the behaviour must be real.
"""

from __future__ import annotations

import json

import anyio
import anyio.abc
import attrs
import httpx2
import pytest

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncQuickchat,
    ChatRequest,
    ClientClosedError,
    Httpx2Transport,
    ResponseTooLargeError,
    Timeout,
    UnexpectedResponseError,
    __version__,
)
from tests.conftest import SCENARIO_ID, TOKEN, FakeChat, MakeClient, chat_reply

from .conftest import Serve, header_values, ok_response, refused_port


pytestmark = pytest.mark.anyio

REQUEST = ChatRequest(
    "https://app.quickchat.ai/chat",
    {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    b'{"scenario_id":"scn-42","text":"Hi"}',
    Timeout(total=7, connect=2),
    4096,
)


class TestOwnership:
    async def test_owned_client(self):
        """Without a client, the transport makes one, names it, and closes it."""
        transport = Httpx2Transport(max_connections=3)

        assert repr(transport) == "<Httpx2Transport owned httpx2.AsyncClient>"
        assert transport.user_agent == (
            f"quickchat-async/{__version__} httpx2/{httpx2.__version__}"
        )
        async with transport:
            request = ChatRequest(f"http://127.0.0.1:{refused_port()}/chat", {}, b"{}")
            with pytest.raises(APIConnectionError, match="could not connect"):
                await transport.send(request)
        assert transport.client.is_closed

    async def test_callers_client_stays_open(self, chat: FakeChat):
        """A caller's client is used and never closed by the SDK."""
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(chat)) as http:
            async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http) as c:
                assert (await c.say("Hello!")).text == "You said: Hello!"
                assert repr(c.transport) == "<Httpx2Transport caller's httpx2.AsyncClient>"
                assert c.transport.client is http  # type: ignore[attr-defined]
            assert not http.is_closed

    async def test_handed_over_client_is_closed(self, chat: FakeChat):
        """close_client=True hands the client over: closing the transport closes it."""
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(chat))
        transport = Httpx2Transport(http, close_client=True)

        await transport.aclose()

        assert http.is_closed


class TestOwnedPool:
    """An owned client's requests go straight to its connection pool, as the client sends them."""

    async def test_the_clients_headers_under_the_requests(self, serve: Serve):
        """The owned client's defaults go out, under the request's own headers."""

        async def answer(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response())

        server = await serve(answer)
        request = attrs.evolve(
            REQUEST, url=f"{server.url}/chat", headers={**REQUEST.headers, "Accept": "text/x"}
        )
        async with Httpx2Transport() as transport:
            for _ in range(2):  # the merged headers are kept, and the connection reused
                response = await transport.send(request)
                assert json.loads(response.content)["reply"] == "Hi!"
            defaults = transport.client.headers

        assert server.connections == 1
        for sent in server.requests:
            assert header_values(sent, "Accept") == ["text/x"]
            assert header_values(sent, "Accept-Encoding") == [defaults["Accept-Encoding"]]
            assert header_values(sent, "User-Agent") == [defaults["User-Agent"]]
            assert header_values(sent, "Authorization") == [f"Bearer {TOKEN}"]
            assert header_values(sent, "Content-Length") == [str(len(REQUEST.body))]

    async def test_an_undecodable_body_names_the_request(self, serve: Serve):
        """A body the SDK cannot inflate is the engine's DecodingError, then the SDK's."""

        async def answer(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response(b"not zstd at all", b"Content-Encoding: zstd-x"))

        server = await serve(answer)
        async with Httpx2Transport() as transport:
            with pytest.raises(APIConnectionError, match="could not decode") as caught:
                await transport.send(attrs.evolve(REQUEST, url=f"{server.url}/chat"))

        assert isinstance(caught.value.__cause__, httpx2.DecodingError)

    async def test_closed_by_its_client(self):
        """Closing the owned client (`transport.client`) closes the transport for good."""
        transport = Httpx2Transport()
        await transport.client.aclose()

        with pytest.raises(ClientClosedError, match="closed"):
            await transport.send(REQUEST)

    async def test_proxies_from_the_environment(self, serve: Serve, monkeypatch):
        """With a proxy in the environment, the owned client sends through it, as httpx2 does."""

        async def answer(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response())

        proxy = await serve(answer)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        request = attrs.evolve(REQUEST, url="http://quickchat.invalid/chat")
        async with Httpx2Transport() as transport:
            response = await transport.send(request)

        assert response.status_code == 200
        (sent,) = proxy.requests
        assert sent.startswith(b"POST http://quickchat.invalid/chat HTTP/1.1\r\n")


class TestRequest:
    async def test_as_prepared(self):
        """The prepared request goes out as it is: POST, URL, headers and body."""
        seen: list[httpx2.Request] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return chat_reply()

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            response = await Httpx2Transport(http).send(REQUEST)

        (request,) = seen
        assert (request.method, str(request.url)) == ("POST", REQUEST.url)
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.content == REQUEST.body
        assert response.status_code == 200
        assert json.loads(response.content)["reply"] == "Hi there!"

    async def test_the_attempts_limits(self):
        """The engine is given the attempt's limits: connect, and the total for the rest."""
        limits: list[dict[str, float | None]] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            limits.append(request.extensions["timeout"])
            return chat_reply()

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            await Httpx2Transport(http).send(REQUEST)

        assert limits == [{"connect": 2, "read": 7, "write": 7, "pool": 7}]

    async def test_redirects_not_followed_by_a_following_client(self):
        """A caller's client set to follow redirects does not follow the SDK's request."""
        calls: list[str] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            calls.append(str(request.url))
            return httpx2.Response(307, headers={"Location": "https://evil.example/chat"})

        mock = httpx2.MockTransport(handler)
        async with httpx2.AsyncClient(transport=mock, follow_redirects=True) as http:
            response = await Httpx2Transport(http).send(REQUEST)

        assert response.status_code == 307
        assert calls == [REQUEST.url]


class TestBody:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Content-Length": "5000"},
            {},
            {"Content-Length": "²".encode()},  # not ASCII digits: read as a stream
        ],
        ids=["declared", "undeclared", "not-ascii-digits"],
    )
    async def test_read_up_to_the_limit(self, headers):
        """The body is read up to the request's limit, however its length is declared."""
        body = b"x" * 5000

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(body))

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            response = await Httpx2Transport(http).send(REQUEST)

        assert response.truncated
        assert response.content == body[:4096]

    async def test_small_body_read_whole(self):
        """A body within the limit comes back whole, with its headers."""

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=b"x" * 4096, headers={"X-Id": "7"})

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            response = await Httpx2Transport(http).send(REQUEST)

        assert (len(response.content), response.truncated) == (4096, False)
        assert response.headers["x-id"] == response.headers["X-Id"] == "7"

    async def test_endless_stream_stops_when_closed(self):
        """A body that never ends is read up to the limit, then closed."""
        sent = 0

        async def endless():
            nonlocal sent
            while True:
                sent += 1
                yield b"." * 1024

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=endless())

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            with anyio.fail_after(5):
                response = await Httpx2Transport(http).send(REQUEST)

        assert response.truncated
        assert sent <= 2 * 4096 // 1024 + 2


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "cls", "unknown", "words"),
        [
            (httpx2.ConnectError("refused"), APIConnectionError, False, "could not connect"),
            (httpx2.ConnectTimeout("slow"), APITimeoutError, False, "timed out connecting"),
            (httpx2.PoolTimeout("full"), APITimeoutError, False, "free connection"),
            (httpx2.ReadTimeout("slow"), APITimeoutError, True, "waiting for the reply"),
            (httpx2.WriteTimeout("slow"), APITimeoutError, True, "sending the message"),
            (httpx2.RemoteProtocolError("gone"), APIConnectionError, True, "lost the connection"),
            (httpx2.ReadError("reset"), APIConnectionError, True, "lost the connection"),
            (httpx2.WriteError("broken pipe"), APIConnectionError, True, "lost the connection"),
            (httpx2.ProxyError("no"), APIConnectionError, True, "through the proxy"),
        ],
    )
    async def test_mapped(self, make_client: MakeClient, error, cls, unknown, words):
        """Each engine error is the SDK's own, saying whether the message may have been sent."""

        def handler(request: httpx2.Request) -> httpx2.Response:
            raise error

        client = make_client(handler, max_retries=0)

        with pytest.raises(cls, match=words) as info:
            await client.say("Hello!")

        assert type(info.value) is cls
        assert info.value.outcome_unknown is unknown
        assert info.value.url == "https://app.quickchat.ai/chat"
        assert info.value.__cause__ is error

    async def test_broken_gzip(self, make_client: MakeClient):
        """A body that does not decode as its Content-Encoding says: outcome unknown."""

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})

        client = make_client(handler, max_retries=0)

        with pytest.raises(APIConnectionError, match="could not decode the reply") as info:
            await client.say("Hello!")

        assert info.value.outcome_unknown

    async def test_deadline_over_a_slow_handler(self, make_client: MakeClient):
        """The attempt's deadline holds whatever the engine does meanwhile."""

        async def handler(request: httpx2.Request) -> httpx2.Response:
            await anyio.sleep(5)
            return chat_reply()

        client = make_client(handler, timeout=0.2, max_retries=0)

        with anyio.fail_after(3), pytest.raises(APITimeoutError, match="per-attempt deadline"):
            await client.say("Hello!")

    @pytest.mark.parametrize(
        ("response", "error"),
        [
            (httpx2.Response(302, headers={"Location": "/elsewhere"}), APIStatusError),
            (httpx2.Response(200, text="<html>hi</html>"), UnexpectedResponseError),
            (httpx2.Response(200, content=b"{" * 5000), ResponseTooLargeError),
        ],
    )
    async def test_what_the_transport_does_not_judge(self, make_client, response, error):
        """Statuses and bodies are returned as they came; the client decides what they mean."""

        def handler(request: httpx2.Request) -> httpx2.Response:
            return response

        client = make_client(handler, max_response_bytes=4096)

        with pytest.raises(error):
            await client.say("Hello!")
