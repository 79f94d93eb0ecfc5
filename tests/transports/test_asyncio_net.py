"""NativeAsyncioBackend: httpcore2's connection pool on asyncio's transports, over real sockets.

Each test drives `httpcore2.AsyncConnectionPool` with the backend against a loopback server
whose bytes it scripts (or `Httpx2Pool`, the SDK's default pool, where httpx2's errors count).
On trio the backend hands over to httpcore2's own, and the same exchanges hold.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import anyio.streams.tls
import httpcore2
import httpx2
import pytest
import trustme

from quickchat_async import APIConnectionError, AsyncQuickchat
from quickchat_async._transports._asyncio_net import NativeAsyncioBackend
from quickchat_async._transports._httpx2 import Httpx2Pool
from tests.conftest import SCENARIO_ID, TOKEN

from .conftest import OK_BODY, Serve, blackhole, ok_response, read_request, refused_port


pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


def pool(**options: object) -> httpcore2.AsyncConnectionPool:
    return httpcore2.AsyncConnectionPool(network_backend=NativeAsyncioBackend(), **options)  # type: ignore[arg-type]


async def post(
    connections: httpcore2.AsyncConnectionPool,
    url: str,
    body: bytes = b"{}",
    **timeouts: float,
) -> httpcore2.Response:
    return await connections.request(
        "POST",
        f"{url}/chat",
        content=body,
        extensions={"timeout": {**TIMEOUTS, **timeouts}},
    )


async def answer(stream: anyio.abc.SocketStream, _request: bytes) -> None:
    await stream.send(ok_response())


class TestExchange:
    async def test_requests_share_one_connection(self, serve: Serve, anyio_backend: str):
        """Sequential requests go out on one kept-alive connection, each answered whole."""
        server = await serve(answer)
        async with pool() as connections:
            for _ in range(3):
                response = await post(connections, server.url, b'{"text": "Hi"}')
                assert response.status == 200
                assert response.content == OK_BODY
        assert server.connections == 1
        assert [r.endswith(b'{"text": "Hi"}') for r in server.requests] == [True] * 3

    async def test_native_stream_on_asyncio_only(self, serve: Serve, anyio_backend: str):
        """On asyncio the connection is the backend's own; on trio, httpcore2's trio stream."""
        server = await serve(answer)
        async with pool() as connections:
            response = await post(connections, server.url)
            stream = response.extensions["network_stream"]
            native = type(stream).__module__.endswith("_asyncio_net")
            assert native is (anyio_backend == "asyncio")
            sock = stream.get_extra_info("socket")
            assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
            assert stream.get_extra_info("client_addr") == sock.getsockname()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert stream.get_extra_info("ssl_object") is None
            assert stream.get_extra_info("no such thing") is None

    async def test_socket_options_are_set(self, serve: Serve, anyio_backend: str):
        server = await serve(answer)
        options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        async with pool(socket_options=options) as connections:
            response = await post(connections, server.url)
            sock = response.extensions["network_stream"].get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)

    async def test_large_body_both_ways(self, serve: Serve, anyio_backend: str):
        """Megabytes each way arrive whole and in order.

        Writing waits for the peer to read; reading pauses at the high-water mark and resumes.
        """
        sent = bytes(range(256)) * 12_000  # 3 MB, over the backend's read high-water mark

        async def echo(stream: anyio.abc.SocketStream, request: bytes) -> None:
            body = request.partition(b"\r\n\r\n")[2]
            await stream.send(ok_response(body[::-1]))

        server = await serve(echo)
        async with pool() as connections:
            chunks = []
            request = connections.stream(
                "POST", f"{server.url}/chat", content=sent, extensions={"timeout": TIMEOUTS}
            )
            with anyio.fail_after(20):
                async with request as response:
                    # read slowly: the protocol buffers up to its mark, then stops reading
                    async for chunk in response.aiter_stream():
                        chunks.append(chunk)
                        await anyio.sleep(0.001)
            assert b"".join(chunks) == sent[::-1]


class TestIdleConnections:
    async def test_a_connection_the_server_closed_is_not_reused(
        self, serve: Serve, anyio_backend: str
    ):
        """A connection the server closed after answering is not used again.

        The pool sees it (on asyncio with no syscall: the protocol saw the EOF) and the next
        request opens a new connection.
        """

        async def answer_and_close(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response())
            await stream.aclose()

        server = await serve(answer_and_close)
        async with pool() as connections:
            for _ in range(3):
                response = await post(connections, server.url)
                assert response.status == 200
                await anyio.sleep(0.05)  # the FIN arrives while the connection is idle
        assert server.connections == 3

    async def test_stray_bytes_on_an_idle_connection_spend_it(
        self, serve: Serve, anyio_backend: str
    ):
        """An idle connection with bytes nobody asked for is dropped.

        They are not read as the next request's reply.
        """

        async def answer_twice(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response())
            await anyio.sleep(0.02)  # after the reply was read, while the connection is idle
            await stream.send(ok_response(b'{"stray": true}'))

        server = await serve(answer_twice)
        async with pool() as connections:
            first = await post(connections, server.url)
            await anyio.sleep(0.1)
            second = await post(connections, server.url)
        assert first.content == second.content == OK_BODY
        assert server.connections == 2


class TestFailures:
    async def test_refused(self, anyio_backend: str):
        async with pool() as connections:
            with pytest.raises(httpcore2.ConnectError):
                await post(connections, f"http://127.0.0.1:{refused_port()}")

    async def test_connect_timeout(self, anyio_backend: str):
        with blackhole() as port:
            async with pool() as connections:
                with pytest.raises(httpcore2.ConnectTimeout):
                    await post(connections, f"http://127.0.0.1:{port}", connect=0.2)

    async def test_read_timeout(self, serve: Serve, anyio_backend: str):
        async def silent(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await anyio.sleep_forever()

        server = await serve(silent)
        async with pool() as connections:
            with anyio.fail_after(5):
                with pytest.raises(httpcore2.ReadTimeout):
                    await post(connections, server.url, read=0.2)

    async def test_write_timeout(self, anyio_backend: str):
        """A peer that never reads: once the socket buffers are full, writing times out."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            async with pool() as connections:
                with anyio.fail_after(10), pytest.raises(httpcore2.WriteTimeout):
                    await connections.request(
                        "POST",
                        f"http://127.0.0.1:{port}/chat",
                        content=b"x" * 64_000_000,
                        extensions={"timeout": {**TIMEOUTS, "write": 0.3}},
                    )

    async def test_reset_mid_reply(self, serve: Serve, anyio_backend: str):
        """The server drops the connection half-way through its reply: a read error."""

        async def half(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response()[:-10])
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            await stream.aclose()  # linger 0: a reset, not a clean close

        server = await serve(half)
        async with pool() as connections:
            with pytest.raises((httpcore2.ReadError, httpcore2.RemoteProtocolError)):
                await post(connections, server.url)

    async def test_cancelled_read_leaves_the_pool_usable(self, serve: Serve, anyio_backend: str):
        """A request cancelled while it waits for its reply: the next one is answered."""
        replies = iter([None, ok_response()])

        async def slow_then_ok(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            reply = next(replies)
            if reply is None:
                await anyio.sleep_forever()
            await stream.send(reply)

        server = await serve(slow_then_ok)
        async with pool() as connections:
            with anyio.move_on_after(0.2) as scope:
                await post(connections, server.url)
            assert scope.cancelled_caught
            response = await post(connections, server.url)
            assert response.content == OK_BODY

    async def test_a_socket_option_the_system_refuses(self, anyio_backend: str):
        """A connect error (not a bare OSError), and the connection it opened is closed."""
        if anyio_backend != "asyncio":
            pytest.skip("on trio the backend is httpcore2's own")
        ended = anyio.Event()

        async def until_closed(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await stream.receive()
            ended.set()

        options = [(socket.SOL_SOCKET, 12345, 1)]  # no such option
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, until_closed)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            with pytest.raises(httpcore2.ConnectError, match="socket option"):
                await NativeAsyncioBackend().connect_tcp(
                    "127.0.0.1", port, timeout=5, socket_options=options
                )
            with anyio.fail_after(5):
                await ended.wait()
            tg.cancel_scope.cancel()

    async def test_a_host_name_that_cannot_be_encoded(self, anyio_backend: str):
        """A label longer than IDNA allows: a connect error, not a bare UnicodeError.

        (httpcore2's trio backend raises the UnicodeError; the SDK refuses such a base_url
        before sending, on every engine.)
        """
        if anyio_backend != "asyncio":
            pytest.skip("on trio the backend is httpcore2's own")
        with pytest.raises(httpcore2.ConnectError, match="idna"):
            await NativeAsyncioBackend().connect_tcp(f"{'a' * 300}.example", 443, timeout=5)

    async def test_httpx2_errors_from_the_sdk_pool(self, serve: Serve, anyio_backend: str):
        """`Httpx2Pool` raises httpx2's exceptions, for the request and for its body.

        As `httpx2.AsyncHTTPTransport` does.
        """

        async def half(stream: anyio.abc.SocketStream, _request: bytes) -> None:
            await stream.send(ok_response()[:-10])
            await stream.aclose()

        server = await serve(half)
        limits = httpx2.Limits(max_connections=2)
        async with httpx2.AsyncClient(
            transport=Httpx2Pool(limits=limits, ssl_context=ssl.create_default_context())
        ) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.post(f"http://127.0.0.1:{refused_port()}/chat")
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.post(f"{server.url}/chat")
            async with client.stream("POST", f"{server.url}/chat") as response:
                with pytest.raises(httpx2.RemoteProtocolError):
                    await response.aread()


@pytest.fixture(name="authority")
def _authority() -> trustme.CA:
    """A certificate authority of the test's own, which the system does not trust."""
    return trustme.CA()


@pytest.fixture(name="tls")
def _tls(authority: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


@contextlib.asynccontextmanager
async def tls_server(
    context: ssl.SSLContext, handle: Callable[[anyio.abc.ByteStream], Awaitable[None]]
) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 running `handle` for each connection; yields its URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with (
        anyio.streams.tls.TLSListener(listener, context, standard_compatible=False) as tls,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(tls.serve, handle)
        yield f"https://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


class TestTLS:
    async def test_https(self, tls: tuple[ssl.SSLContext, ssl.SSLContext], anyio_backend: str):
        """TLS on top of the connection (`start_tls`), verified against the trusted CA."""
        server_context, client_context = tls
        connections_seen = 0

        async def handle(stream: anyio.abc.ByteStream) -> None:
            nonlocal connections_seen
            connections_seen += 1
            async with stream:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:
                        request = await read_request(stream)  # type: ignore[arg-type]
                        assert request.startswith(b"POST /chat")
                        await stream.send(ok_response())

        async with (
            tls_server(server_context, handle) as url,
            pool(ssl_context=client_context) as connections,
        ):
            for _ in range(2):
                response = await post(connections, url)
                assert response.content == OK_BODY
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            assert ssl_object.version().startswith("TLS")
        assert connections_seen == 1

    async def test_untrusted_certificate(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext], anyio_backend: str
    ):
        """A certificate from an authority the client does not trust: a connect error."""
        server_context, _ = tls

        async def handle(stream: anyio.abc.ByteStream) -> None:
            async with stream:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await stream.receive()

        async with (
            tls_server(server_context, handle) as url,
            pool(ssl_context=ssl.create_default_context()) as connections,
        ):
            with pytest.raises(httpcore2.ConnectError) as caught:
                await post(connections, url)
        if anyio_backend == "asyncio":
            assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)

    async def test_handshake_timeout(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext], anyio_backend: str
    ):
        """A server that accepts the connection and never answers the TLS hello."""
        _, client_context = tls
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            async with pool(ssl_context=client_context) as connections:
                with anyio.fail_after(5), pytest.raises(httpcore2.ConnectTimeout):
                    await post(connections, f"https://127.0.0.1:{port}", connect=0.3)


class TestTrustedAuthorities:
    async def test_ssl_cert_file_names_them(
        self,
        tls: tuple[ssl.SSLContext, ssl.SSLContext],
        authority: trustme.CA,
        tmp_path,
        monkeypatch,
        anyio_backend: str,
    ):
        """The default engine trusts the system's store; SSL_CERT_FILE names another bundle.

        Set after a client was made without it, it still applies to the next client.
        """
        server_context, _ = tls
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))

        async def handle(stream: anyio.abc.ByteStream) -> None:
            async with stream:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:
                        await read_request(stream)  # type: ignore[arg-type]
                        await stream.send(ok_response())

        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        async with tls_server(server_context, handle) as url:
            async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=url) as client:
                with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                    await client.say("Hello")
                assert not caught.value.outcome_unknown
                assert "point SSL_CERT_FILE at its bundle" in caught.value.message

            monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
            async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=url) as client:
                assert (await client.say("Hello")).text == "Hi!"


@contextlib.asynccontextmanager
async def speaking_first(greeting: bytes | None) -> AsyncIterator[int]:
    """A server that sends `greeting` as soon as a connection opens (None: closes it at once).

    Yields its port.
    """

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if greeting is None:
                return
            await stream.send(greeting)
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def readable(stream: httpcore2.AsyncNetworkStream) -> None:
    """Wait until bytes or the end of the connection have arrived, unread."""
    with anyio.fail_after(5):
        while not stream.get_extra_info("is_readable"):  # noqa: ASYNC110 -- a state to poll
            await anyio.sleep(0.01)


class TestBeforeTheHandshake:
    async def test_bytes_that_did_not_come_through_tls_are_refused(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext], anyio_backend: str
    ):
        """Plain bytes waiting when TLS starts (a proxy's injection): a connect error.

        Never bytes handed on as if they had been decrypted.
        """
        _, client_context = tls
        async with speaking_first(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!") as port:
            stream = await NativeAsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
            await readable(stream)
            with anyio.fail_after(5), pytest.raises(httpcore2.ConnectError):
                await stream.start_tls(client_context, server_hostname="127.0.0.1", timeout=5)
            await stream.aclose()

    async def test_a_connection_closed_before_the_handshake(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext], anyio_backend: str
    ):
        """The server closed first: a connect error at once, even with no time limit."""
        _, client_context = tls
        async with speaking_first(None) as port:
            stream = await NativeAsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
            await readable(stream)
            with anyio.fail_after(5), pytest.raises(httpcore2.ConnectError):
                await stream.start_tls(client_context, server_hostname="127.0.0.1", timeout=None)
            await stream.aclose()


async def test_the_sdk_default_sends_through_it(
    serve: Serve, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
):
    """The SDK's own client connects through this backend (then, on asyncio, its own stream)."""
    streams: list[str] = []
    connect = NativeAsyncioBackend.connect_tcp

    async def spy(self: NativeAsyncioBackend, *args: object, **kwargs: object) -> object:
        stream = await connect(self, *args, **kwargs)  # type: ignore[arg-type]
        streams.append(type(stream).__module__.rpartition(".")[2])
        return stream

    monkeypatch.setattr(NativeAsyncioBackend, "connect_tcp", spy)
    server = await serve(answer)
    async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=server.url) as client:
        for _ in range(2):
            reply = await client.say("Hello")
            assert reply.text == "Hi!"
    assert streams == ["_asyncio_net" if anyio_backend == "asyncio" else "trio"]
