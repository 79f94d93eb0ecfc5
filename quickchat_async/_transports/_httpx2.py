"""The default transports, on httpx2 (async and blocking), and what httpx2's exceptions mean."""

from __future__ import annotations

from typing import Final

import httpx2

from quickchat_async._wire import ErrorTable

from ._httpx_family import Engine, HttpxFamilyTransport, SyncHttpxFamilyTransport


__all__ = ["Httpx2Transport", "SyncHttpx2Transport"]

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
