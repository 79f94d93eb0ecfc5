"""The default transports, on httpx2 (async and blocking), and what httpx2's exceptions mean."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Generator, MutableMapping
from typing import Any, Final, cast

import httpcore2
import httpx2

from quickchat_async._wire import ErrorTable

from ._asyncio_net import NativeAsyncioBackend
from ._httpx_family import Engine, HttpxFamilyTransport, SyncHttpxFamilyTransport, tls_context


__all__ = ["Httpx2Pool", "Httpx2Transport", "SyncHttpx2Transport"]

#: Raised before a single byte of the request went out: the server cannot have processed it,
#: so retrying is safe. Most specific first.
_NOT_SENT: Final[ErrorTable] = (
    (httpx2.ConnectTimeout, "timed out connecting to"),
    (httpx2.PoolTimeout, "timed out waiting for a free connection to"),
    (httpx2.ConnectError, "could not connect to"),
)
#: Raised once the request may have been sent: the outcome is unknown.
_MAYBE_SENT: Final[ErrorTable] = (
    (httpx2.ReadTimeout, "timed out waiting for the reply from"),
    (httpx2.WriteTimeout, "timed out sending the message to"),
    (httpx2.TimeoutException, "timed out talking to"),
    (httpx2.RemoteProtocolError, "lost the connection to"),
    (httpx2.ReadError, "lost the connection to"),
    (httpx2.WriteError, "lost the connection to"),
    (httpx2.CloseError, "lost the connection to"),
    (httpx2.NetworkError, "lost the connection to"),
    (httpx2.LocalProtocolError, "could not form a valid HTTP request to"),
    (httpx2.ProtocolError, "got a malformed HTTP response from"),
    (httpx2.ProxyError, "could not go through the proxy to"),
    (httpx2.UnsupportedProtocol, "cannot speak the protocol of"),
    (httpx2.DecodingError, "could not decode the reply from"),
    (httpx2.TooManyRedirects, "was redirected too often by"),
    (httpx2.SSEError, "got a malformed event stream from"),
    (httpx2.TransportError, "failed talking to"),
)


#: httpcore2's exceptions as httpx2's, most specific first (as httpx2's own transport maps them).
_FROM_CORE: Final[tuple[tuple[type[Exception], type[httpx2.TransportError]], ...]] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProxyError, httpx2.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx2() -> Generator[None]:
    """Raise httpcore2's exceptions as the httpx2 ones they stand for."""
    try:
        yield
    except Exception as exc:
        for core, mapped in _FROM_CORE:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx2.AsyncByteStream):
    """A response body from the pool, with httpcore2's errors raised as httpx2's.

    An iterator, not an async generator: stopped half-way, it leaves nothing to finalise.
    """

    __slots__ = ("_chunks", "_stream")

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._chunks = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._chunks is not None  # noqa: S101 -- __aiter__ ran first
        with _as_httpx2():
            return await self._chunks.__anext__()

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx2():
                await close()


class Httpx2Pool(httpx2.AsyncBaseTransport):
    """httpx2's connection pool (httpcore2) on asyncio's own transports: the SDK's default.

    What `httpx2.AsyncHTTPTransport` does (the same pool, requests and responses converted,
    httpcore2's exceptions raised as httpx2's), with one difference it has no parameter for:
    the pool's network backend, `NativeAsyncioBackend` (httpcore2's own on trio). The client the
    SDK makes (`Httpx2Transport.client`) is built over it, and the SDK sends to it directly.

    Its measurement: `python benchmarks/bench.py`, 64 in flight on one nginx, the SDK default
    made 1.01x the requests per second of raw `httpx2.AsyncClient.post` over
    `httpx2.AsyncHTTPTransport`, and 1.26x to 1.39x over this pool (docs/performance.md).

    Args:
        limits: the pool's size and keep-alive.
        ssl_context: the TLS context of its connections.
    """

    def __init__(self, *, limits: httpx2.Limits, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=NativeAsyncioBackend(),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through the pool; the response's body is streamed."""
        url = request.url
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=cast("MutableMapping[str, Any]", request.extensions),
        )
        with _as_httpx2():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)  # noqa: S101 -- an async pool's
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            # httpcore2 leaves the type of its default (an empty dict) unknown
            extensions=response.extensions,  # pyright: ignore[reportUnknownMemberType,reportUnknownArgumentType]
        )

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        with _as_httpx2():
            await self._pool.aclose()


class Httpx2Transport(HttpxFamilyTransport[httpx2.AsyncClient]):
    """The default transport, on an `httpx2.AsyncClient` (asyncio and trio).

    httpx2 verifies TLS against the operating system's trust store (`SSL_CERT_FILE` and
    `SSL_CERT_DIR` still apply). The clients the SDK makes share one TLS context, built on
    first use and read from those then.

    Args:
        client: a caller-owned `httpx2.AsyncClient` (proxies, mTLS, HTTP/2, mocks); the
            transport never closes it unless `close_client` says so. Without one, the transport
            creates and owns a client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `aclose()` closes it too.
    """

    __slots__ = ()

    engine = Engine(httpx2, _NOT_SENT, _MAYBE_SENT)

    @classmethod
    def _new_pool(cls, limits: httpx2.Limits) -> Httpx2Pool:
        """The connection pool of an owned client: `Httpx2Pool`."""
        return Httpx2Pool(limits=limits, ssl_context=tls_context(cls.engine.module))


class SyncHttpx2Transport(SyncHttpxFamilyTransport[httpx2.Client]):
    """The blocking client's default transport, on an `httpx2.Client` (threads and gevent).

    Each attempt keeps its deadline (`Timeout.total`): every phase's socket timeout is bounded
    by what is left of it, and a body that drips in is cut when it runs out.

    Args:
        client: a caller-owned `httpx2.Client` (proxies, mTLS, mocks); the transport never
            closes it unless `close_client` says so. Without one, the transport creates and
            owns a client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `close()` closes it too.
    """

    __slots__ = ()

    engine = Httpx2Transport.engine
