"""`GeventTransport`: the blocking client's transport for gevent programs, on geventhttpclient.

Locust runs its users as greenlets under gevent's monkey-patching. The default blocking
transport (httpx2) works there, but spends several times the CPU per request that
geventhttpclient (the engine of Locust's own `FastHttpUser`) does, and a load generator's CPU
is what bounds the rate it can drive. This transport keeps the SDK's contract (the same
`Timeout`, no redirects, a bounded body, the same errors and the same "was it sent?" rule) on
geventhttpclient's connection pool and C response parser: the request goes out in one write,
and the attempt's deadline is a `gevent.Timeout`, which, as `anyio.fail_after` does, interrupts
whatever the greenlet is waiting for.

It runs under gevent's monkey-patching only (the client's locks must be gevent's). Install it
with ``pip install "quickchat-async[locust]"``; `quickchat_async.locust.QuickchatUser` uses it.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import httpx2

from quickchat_async._exceptions import ClientClosedError, QuickchatError
from quickchat_async._models import HTTPResponse
from quickchat_async._version import __version__
from quickchat_async._wire import ChatRequest, ErrorTable, classify, deadline_error

from ._base import CappedBody, SyncBaseTransport, scrubbed
from ._decoding import UndecodableError


if TYPE_CHECKING:
    from geventhttpclient.connectionpool import ConnectionPool
    from geventhttpclient.response import HTTPSocketPoolResponse

__all__ = ["GeventTransport"]

_INSTALL: Final = (
    "The gevent transport needs gevent and geventhttpclient: pip install "
    "'quickchat-async[locust]' (or use the default transport='httpx2')."
)
_PATCHED_ONLY: Final = (
    "The gevent transport runs under gevent's monkey-patching (as in Locust), where the "
    "client's locks and sockets are gevent's: call gevent.monkey.patch_all() first, or use the "
    "default transport='httpx2'."
)
#: How much of the body one read asks for.
_BLOCK: Final = 64 * 1024
#: How many (URL, headers) pairs keep their prepared request head.
_MAX_TARGETS: Final = 64

HeaderItems: TypeAlias = tuple[tuple[str, str], ...]


def _require_patched_gevent() -> None:
    try:
        import gevent.monkey  # noqa: PLC0415 -- an optional extra
        import geventhttpclient  # noqa: F401, PLC0415 # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    if not all(gevent.monkey.is_module_patched(name) for name in ("socket", "threading")):
        raise RuntimeError(_PATCHED_ONLY)


class _Expired(Exception):  # noqa: N818 -- never escapes: it becomes an APITimeoutError
    """The attempt's deadline ran out (raised in the greenlet by its `gevent.Timeout`).

    Not an OSError: geventhttpclient catches those while connecting, to try the next address.
    """


class _ConnectExpired(Exception):  # noqa: N818 -- never escapes: it becomes an APITimeoutError
    """Connecting took longer than `Timeout.connect`."""


@functools.cache
def _tables() -> tuple[ErrorTable, ErrorTable]:
    """What fails while getting a connection (nothing was sent), and what fails after."""
    from geventhttpclient.response import (  # noqa: PLC0415 -- an optional extra
        HTTPConnectionClosed,
        HTTPParseError,
    )

    connecting: ErrorTable = (
        (_ConnectExpired, "timed out connecting to"),
        (socket.gaierror, "could not resolve the host of"),
        (ssl.SSLError, "could not connect securely to"),
        (OSError, "could not connect to"),
    )
    exchanging: ErrorTable = (
        (UndecodableError, "could not decode the reply from"),
        (HTTPConnectionClosed, "lost the connection to"),
        (HTTPParseError, "got a malformed HTTP response from"),
        (OSError, "lost the connection to"),
    )
    return connecting, exchanging


def _pool(url: httpx2.URL, max_connections: int) -> ConnectionPool:
    """A connection pool for the URL's scheme, host and port."""
    from geventhttpclient.connectionpool import (  # noqa: PLC0415 -- an optional extra
        ConnectionPool,
        SSLConnectionPool,
    )

    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    # No socket timeouts: the attempt's gevent.Timeout bounds every wait.
    options: dict[str, Any] = {
        "size": max_connections,
        "connection_timeout": None,
        "network_timeout": None,
    }
    if url.scheme == "https":
        return SSLConnectionPool(host, port, host, port, **options)
    return ConnectionPool(host, port, host, port, **options)


class _Target:
    """Where a request goes (a pool), and the start of every request with its URL and headers."""

    __slots__ = ("_head", "pool")

    def __init__(self, pool: ConnectionPool, url: httpx2.URL, headers: HeaderItems) -> None:
        self.pool = pool
        authority = f"[{url.host}]" if ":" in url.host else url.host
        if url.port is not None:
            authority += f":{url.port}"
        lines = [f"POST {url.raw_path.decode('ascii')} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{name}: {value}" for name, value in headers]
        # It holds the credential (the Authorization header): never shown, and never a local of
        # a frame that raises the SDK's errors.
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def __repr__(self) -> str:
        return f"<_Target {self.pool!r}>"

    def message(self, body: bytes) -> bytes:
        """The whole request for `body`, to send in one write."""
        return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)


class GeventTransport(SyncBaseTransport):
    """A blocking transport on geventhttpclient, for programs under gevent (Locust).

    Args:
        max_connections: the size of the connection pool (per scheme, host and port).

    Raises:
        ImportError: gevent or geventhttpclient is not installed.
        RuntimeError: gevent has not monkey-patched the program's sockets and threads.
    """

    __slots__ = ("_closed", "_last", "_max_connections", "_pools", "_targets", "user_agent")

    def __init__(self, *, max_connections: int = 100) -> None:
        _require_patched_gevent()
        import geventhttpclient  # noqa: PLC0415 -- an optional extra

        #: The User-Agent the client sends through this transport (unless default_headers set one).
        self.user_agent = (
            f"quickchat-async/{__version__} geventhttpclient/{geventhttpclient.__version__}"
        )
        self._max_connections = max_connections
        self._pools: dict[tuple[str, str, int | None], ConnectionPool] = {}
        self._targets: dict[tuple[str, HeaderItems], _Target] = {}
        self._last: tuple[str, Mapping[str, str], _Target] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<GeventTransport {state} max_connections={self._max_connections}>"

    def _target(self, request: ChatRequest) -> _Target:
        last = self._last
        if last is not None and last[1] is request.headers and last[0] == request.url:
            return last[2]  # nearly always: a client's requests share its URL and headers
        headers = tuple(request.headers.items())
        target = self._targets.get((request.url, headers))
        if target is None:
            url = httpx2.URL(request.url)
            where = (url.scheme, url.host, url.port)
            pool = self._pools.get(where)
            if pool is None:
                pool = self._pools[where] = _pool(url, self._max_connections)
            target = _Target(pool, url, headers)
            if len(self._targets) < _MAX_TARGETS:
                self._targets[request.url, headers] = target
        self._last = (request.url, request.headers, target)
        return target

    def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`.

        Raises:
            APIConnectionError: no complete response (`APITimeoutError` for deadlines).
            ClientClosedError: the transport was closed.
        """
        import gevent  # noqa: PLC0415 -- an optional extra

        if self._closed:
            raise ClientClosedError("This GeventTransport is closed.")
        target = self._target(request)
        progress = [False]  # whether any byte of the request may have gone out
        timeout = request.timeout
        try:
            with gevent.Timeout(timeout.total, _Expired):
                return _exchange(target, request, timeout.connect, progress)
        except _Expired as exc:
            raise deadline_error(url=request.url, cause=exc, sent=progress[0]) from scrubbed(exc)
        except _failures() as exc:
            raise _error(exc, request.url, sent=progress[0]) from scrubbed(exc)

    def close(self) -> None:
        """Close the connections. Safe to call twice."""
        self._closed = True
        pools, self._pools = self._pools, {}
        self._targets.clear()
        self._last = None
        for pool in pools.values():
            pool.close()


def _exchange(
    target: _Target, request: ChatRequest, connect: float | None, progress: list[bool]
) -> HTTPResponse:
    """Connect (or reuse a connection), send in one write, read the bounded response."""
    import gevent  # noqa: PLC0415 -- an optional extra
    from geventhttpclient.response import (  # noqa: PLC0415 -- an optional extra
        HTTPSocketPoolResponse,
    )

    pool = target.pool
    with gevent.Timeout(connect, _ConnectExpired):
        sock = pool.get_socket()
    progress[0] = True
    try:
        sock.sendall(target.message(request.body))
    except BaseException:
        pool.release_socket(sock)
        raise
    # It releases the connection itself: back to the pool once the body is read, closed if not.
    response = HTTPSocketPoolResponse(sock, pool, method="POST", block_size=_BLOCK)
    content, truncated = _read_capped(response, request.max_response_bytes)
    return HTTPResponse(
        response.status_code, httpx2.Headers(list(response.items())), content, truncated
    )


def _read_capped(response: HTTPSocketPoolResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the decoded body; say whether more was left unread.

    The body arrives raw (geventhttpclient does not decode), and a compressed one is inflated
    within the limit (`CappedBody`).

    Raises:
        UndecodableError: an encoding the SDK does not decode, or corrupt data.
    """
    encoding = response.get("content-encoding")
    try:
        body = CappedBody(
            limit,
            encoding if isinstance(encoding, str) else ",".join(encoding or ()),
            status=response.status_code,
        )
    except UndecodableError:
        response.release()
        raise
    while chunk := response.read(_BLOCK):
        try:
            full = body.add(chunk)
        except UndecodableError:
            response.release()
            raise
        if full:
            response.release()  # unread: the connection is closed, not reused
            break
    return body.content()


@functools.cache
def _failures() -> tuple[type[Exception], ...]:
    """What an exchange raises when it fails: the socket's errors and the parser's."""
    from geventhttpclient.response import HTTPParseError  # noqa: PLC0415 -- an optional extra

    return (OSError, _ConnectExpired, HTTPParseError, UndecodableError)


def _error(exc: BaseException, url: str, *, sent: bool) -> QuickchatError:
    """The SDK's error for what failed while connecting (unsent) or exchanging (maybe sent)."""
    connecting, exchanging = _tables()
    return classify(
        exc,
        url=url,
        tables=((exchanging, True),) if sent else ((connecting, False),),
        timeout=isinstance(exc, (_ConnectExpired, TimeoutError)),
        otherwise_sent=sent,
    )
