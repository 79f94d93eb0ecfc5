"""The transports for an httpx 0.28 client (async and blocking), and what httpx's errors mean.

httpx 0.28 is the last httpx release; the SDK runs on its successor, httpx2, by default, and
does not install httpx. These transports are for a caller who passes an `httpx.AsyncClient` or
an `httpx.Client` (``http_client=``) or asks for ``transport="httpx"``: httpx is then already
installed.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

from quickchat_async._wire import ErrorTable

from ._httpx_family import Engine, HttpxFamilyTransport, SyncHttpxFamilyTransport


if TYPE_CHECKING:
    import httpx  # noqa: F401 -- named in the base class below, as a string

__all__ = ["HttpxTransport", "SyncHttpxTransport"]

_INSTALL = (
    "The httpx transport needs httpx: pip install httpx (or use the default engine, httpx2, "
    "which needs nothing more)."
)


@functools.cache
def _engine() -> Engine:
    try:
        import httpx  # noqa: PLC0415 -- optional: only for callers who bring httpx
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    not_sent: ErrorTable = (
        (httpx.ConnectTimeout, "timed out connecting to"),
        (httpx.PoolTimeout, "timed out waiting for a free connection to"),
        (httpx.ConnectError, "could not connect to"),
    )
    maybe_sent: ErrorTable = (
        (httpx.ReadTimeout, "timed out waiting for the reply from"),
        (httpx.WriteTimeout, "timed out sending the message to"),
        (httpx.TimeoutException, "timed out talking to"),
        (httpx.RemoteProtocolError, "lost the connection to"),
        (httpx.ReadError, "lost the connection to"),
        (httpx.WriteError, "lost the connection to"),
        (httpx.CloseError, "lost the connection to"),
        (httpx.NetworkError, "lost the connection to"),
        (httpx.LocalProtocolError, "could not form a valid HTTP request to"),
        (httpx.ProtocolError, "got a malformed HTTP response from"),
        (httpx.ProxyError, "could not go through the proxy to"),
        (httpx.UnsupportedProtocol, "cannot speak the protocol of"),
        (httpx.DecodingError, "could not decode the reply from"),
        (httpx.TooManyRedirects, "was redirected too often by"),
        (httpx.TransportError, "failed talking to"),
    )
    return Engine(httpx, not_sent, maybe_sent)


class _LazyEngine:
    """The `engine` class attribute, resolved on first use, so importing the SDK needs no httpx."""

    def __get__(self, instance: object, owner: type[Any]) -> Engine:
        return _engine()


class HttpxTransport(HttpxFamilyTransport["httpx.AsyncClient"]):
    """A transport on an `httpx.AsyncClient` (httpx 0.28; asyncio and trio).

    Args:
        client: a caller-owned `httpx.AsyncClient` (respx mocks, proxies...); the transport
            never closes it unless `close_client` says so. Without one, the transport creates
            and owns a client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `aclose()` closes it too.

    Raises:
        ImportError: httpx is not installed.
    """

    __slots__ = ()

    engine: ClassVar[Engine] = _LazyEngine()  # type: ignore[assignment]


class SyncHttpxTransport(SyncHttpxFamilyTransport["httpx.Client"]):
    """A blocking transport on an `httpx.Client` (httpx 0.28).

    Args:
        client: a caller-owned `httpx.Client` (respx mocks, proxies...); the transport never
            closes it unless `close_client` says so. Without one, the transport creates and
            owns a client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `close()` closes it too.

    Raises:
        ImportError: httpx is not installed.
    """

    __slots__ = ()

    engine: ClassVar[Engine] = _LazyEngine()  # type: ignore[assignment]
