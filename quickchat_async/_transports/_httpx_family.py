"""The transports of the httpx family: httpx2 (the default engine) and httpx 0.28.

The two libraries share their API, so one async class (`HttpxFamilyTransport`, on an
`AsyncClient`) and one blocking class (`SyncHttpxFamilyTransport`, on a `Client`) send through
either; what differs, each engine's exception classes and what they mean, is declared beside its
own transports (`_httpx2`, `_httpx`) as an `Engine`. What the two shells share (the owned client,
the request, following its progress, reading a bounded body) is written here once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar, cast

import anyio
import attrs

from quickchat_async._config import Timeout
from quickchat_async._exceptions import ClientClosedError, QuickchatError
from quickchat_async._models import HTTPResponse
from quickchat_async._version import __version__
from quickchat_async._wire import ChatRequest, ErrorTable, classify, deadline_error

from ._base import BaseTransport, CappedBody, SyncBaseTransport, scrubbed
from ._decoding import UndecodableError


if TYPE_CHECKING:
    import ssl

__all__ = ["Engine", "HttpxFamilyTransport", "SyncHttpxFamilyTransport", "tls_context"]

_ClientT = TypeVar("_ClientT")


@attrs.frozen
class Engine:
    """An httpx-family library, and what its exceptions mean.

    Attributes:
        module: the library (`httpx2` or `httpx`).
        not_sent: its errors raised before a byte of the request went out (safe to retry).
        maybe_sent: its errors raised once the request may have been sent.
        body_type: a request body class of this library that needs no async generator.
    """

    module: ModuleType
    not_sent: ErrorTable
    maybe_sent: ErrorTable
    body_type: type[Any] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "body_type", _body_type(self.module))

    @property
    def name(self) -> str:
        """The library's name, as in its User-Agent."""
        return self.module.__name__

    def translate(self, exc: BaseException, *, url: str, may_be_sent: bool) -> QuickchatError:
        """The SDK's error for an exception of this library, most specific row first."""
        return classify(
            exc,
            url=url,
            tables=((self.not_sent, False), (self.maybe_sent, may_be_sent)),
            timeout=isinstance(exc, self.module.TimeoutException),
            otherwise_sent=True,
        )

    @contextlib.contextmanager
    def errors_mapped(
        self,
        *,
        url: str,
        may_be_sent: Callable[[], bool],
        expired: Callable[[], bool] | None = None,
    ) -> Generator[None]:
        """Translate this library's errors and the attempt's deadline raised in the block.

        `may_be_sent()` is asked at failure time: the transport follows the request's progress,
        which tells a failure before sending (safe to retry) from an ambiguous one. A timeout
        of the library's own is the attempt's deadline when `expired()` says it ran out (the
        blocking transport bounds each phase's timeouts by what is left of it).
        """
        try:
            yield
        except self.module.HTTPError as exc:
            if expired is not None and isinstance(exc, self.module.TimeoutException) and expired():
                raise deadline_error(url=url, cause=exc, sent=may_be_sent()) from scrubbed(exc)
            raise self.translate(exc, url=url, may_be_sent=may_be_sent()) from scrubbed(exc)
        except TimeoutError as exc:  # the per-attempt deadline
            raise deadline_error(url=url, cause=exc, sent=may_be_sent()) from scrubbed(exc)


def tls_context(module: ModuleType) -> ssl.SSLContext:
    """The TLS context of the engine clients the SDK makes: the engine's default, made once.

    Building one (the system's trust store, or `SSL_CERT_FILE` and `SSL_CERT_DIR`) takes some
    20 ms, and a client makes an engine client for each event loop it runs on: with
    `asyncio.run()` per call, that would be 20 ms a call. It is made again when either
    variable changes.
    """
    return _tls_context(module, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _tls_context(
    module: ModuleType,
    cert_file: str | None,  # noqa: ARG001 -- a key of the cache: the engine reads the variable
    cert_dir: str | None,  # noqa: ARG001
) -> ssl.SSLContext:
    return cast("ssl.SSLContext", module.create_ssl_context())


def _body_type(module: ModuleType) -> type[Any]:
    """A request body that the library iterates without an async generator.

    The libraries' own body streams are async generators; cancelled or timed out while the body
    was being written, one is left half-consumed to the garbage collector, and trio warns
    (ResourceWarning; httpx issue 3686). This iterator has nothing to clean up.
    """

    class Body(module.AsyncByteStream):  # type: ignore[name-defined,misc]
        __slots__ = ("_body",)

        def __init__(self, body: bytes) -> None:
            self._body = body

        def __aiter__(self) -> AsyncIterator[bytes]:
            return _Once(self._body)

    return Body


class _Once:
    """An async iterator over one chunk."""

    __slots__ = ("_chunk",)

    def __init__(self, chunk: bytes) -> None:
        self._chunk: bytes | None = chunk

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        chunk, self._chunk = self._chunk, None
        if chunk is None:
            raise StopAsyncIteration
        return chunk


#: How many URLs and timeouts a transport keeps converted to the library's.
_CACHED: Final = 64


class _Progress:
    """Follows one request through the engine's trace events (httpcore's or httpcore2's).

    `may_be_sent` stays True unless the trace shows the request never started to go out, so a
    transport that emits no trace (a mock, another engine) errs on the side of "ambiguous".
    """

    __slots__ = ("may_be_sent",)

    def __init__(self) -> None:
        self.may_be_sent = True

    def saw(self, event: str, _info: Mapping[str, object]) -> None:
        """The blocking engine's trace callback."""
        if event.startswith("connection."):
            self.may_be_sent = False  # (re)connecting: nothing of the request is out yet
        elif ".send_request_headers." in event:
            self.may_be_sent = True

    async def trace(self, event: str, info: Mapping[str, object]) -> None:
        """The async engine's trace callback."""
        self.saw(event, info)

    def __call__(self) -> bool:
        return self.may_be_sent


class _HoldsClient(Generic[_ClientT]):
    """An httpx-family client, owned (created here) or the caller's; the engine it belongs to.

    Args:
        client: a caller-owned client (proxies, mTLS, HTTP/2, mocks); the transport never closes
            it unless `close_client` says so. Without one, the transport creates and owns a
            client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: closing the transport closes it too.
    """

    __slots__ = ("_client", "_direct", "_headers", "_limits", "_owns_client", "_urls", "user_agent")

    #: The library this transport sends through.
    engine: ClassVar[Engine]
    #: The library's client class: "AsyncClient" or "Client".
    _client_class: ClassVar[str]
    #: The library's connection-pool transport class: "AsyncHTTPTransport" or "HTTPTransport".
    _pool_class: ClassVar[str]

    def __init__(
        self,
        client: _ClientT | None = None,
        *,
        max_connections: int = 100,
        close_client: bool = False,
    ) -> None:
        engine = self.engine
        module = engine.module
        self.user_agent = f"quickchat-async/{__version__} {engine.name}/{module.__version__}"
        self._owns_client = client is None or close_client
        #: The connection pool of an owned client, sent through directly (see `_build`).
        self._direct: Any = None
        if client is None:
            limits = module.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            # Proxies named by the environment (HTTPS_PROXY...) are mounted by the client
            # itself, and only when it builds its own pool: then it sends as it would.
            if not urllib.request.getproxies():
                self._direct = self._new_pool(limits)
            client = cast(
                "_ClientT",
                getattr(module, self._client_class)(
                    limits=limits,
                    headers={"User-Agent": self.user_agent},
                    follow_redirects=False,
                    verify=tls_context(module),
                    transport=self._direct,
                ),
            )
        self._client: _ClientT = client
        #: The library's parsed URL of each URL sent to (a client's requests share one), and
        #: its Timeout for each of ours (the client's, and the few that slot waits shorten); as
        #: the pool's "timeout" extension when sending to the pool directly.
        self._urls: dict[str, Any] = {}
        self._limits: dict[Timeout, Any] = {}
        #: The last request headers sent directly, and the same over the client's defaults.
        self._headers: tuple[Mapping[str, str], Any] | None = None

    @classmethod
    def _new_pool(cls, limits: Any) -> Any:  # noqa: ANN401 -- the library's types
        """The connection pool of an owned client: the library's own transport."""
        module = cls.engine.module
        return getattr(module, cls._pool_class)(limits=limits, verify=tls_context(module))

    def __repr__(self) -> str:
        owner = "owned" if self._owns_client else "caller's"
        return f"<{type(self).__name__} {owner} {self.engine.name}.{self._client_class}>"

    @property
    def client(self) -> _ClientT:
        """The underlying client."""
        return self._client

    def _build(self, request: ChatRequest, trace: object) -> Any:  # noqa: ANN401 -- the library's Request
        """The library's request for `request`: its limits, no redirects, traced.

        Raises:
            ClientClosedError: the client was closed (the engine would raise a bare RuntimeError).
        """
        client = cast("Any", self._client)
        if client.is_closed:
            raise ClientClosedError(
                f"The {self.engine.name}.{self._client_class} this transport sends through is "
                "closed."
            )
        module = self.engine.module
        url = self._urls.get(request.url)
        if url is None:  # parsing the URL each time costs a tenth of the library's work
            url = module.URL(request.url)
            if len(self._urls) < _CACHED:
                self._urls[request.url] = url
        timeout = request.timeout
        limits = self._limits.get(timeout)
        if limits is None:
            limits = module.Timeout(timeout.total, connect=timeout.connect)
            if self._direct is not None:  # the pool reads the request's "timeout" extension
                limits = limits.as_dict()
            if len(self._limits) < _CACHED:
                self._limits[timeout] = limits
        if self._direct is None:
            return client.build_request(
                "POST",
                url,
                content=request.body,
                headers=request.headers,
                timeout=limits,
                extensions={"trace": trace},
            )
        return module.Request(
            "POST",
            url,
            content=request.body,
            headers=self._with_defaults(request.headers),
            extensions={"timeout": limits, "trace": trace},
        )

    def _with_defaults(self, headers: Mapping[str, str]) -> Any:  # noqa: ANN401 -- the library's Headers
        """The request's headers over the owned client's defaults (Accept, Accept-Encoding...).

        A client's requests share one headers mapping, merged once here.
        """
        last = self._headers
        if last is None or last[0] is not headers:
            merged = cast("Any", self._client).headers.copy()
            merged.update(headers)
            last = self._headers = (headers, merged)
        return last[1]


class HttpxFamilyTransport(_HoldsClient[_ClientT], BaseTransport):
    """A transport on an httpx-family `AsyncClient`; see `Httpx2Transport` and `HttpxTransport`.

    Args:
        client: a caller-owned client (proxies, mTLS, HTTP/2, mocks); the transport never closes
            it unless `close_client` says so. Without one, the transport creates and owns a
            client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `aclose()` closes it too.
    """

    __slots__ = ()

    _client_class = "AsyncClient"
    _pool_class = "AsyncHTTPTransport"

    async def _send(self, http_request: Any) -> Any:  # noqa: ANN401 -- the library's types
        """Send through the owned pool directly, or through the caller's client.

        An owned client's own layer (authentication and redirect flows, cookies, event hooks,
        its timers) is none of the SDK's use, and costs about as much CPU as the pool under it:
        without it the SDK default went from 0.80x-1.09x to 0.92x-1.14x raw
        `httpx2.AsyncClient.post` (64 in flight on one nginx, `python benchmarks/bench.py`).
        """
        direct = self._direct
        if direct is None:
            return await cast("Any", self._client).send(
                http_request, stream=True, follow_redirects=False
            )
        response = await direct.handle_async_request(http_request)
        response.request = http_request
        return response

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`.

        Raises:
            APIConnectionError: no complete response (`APITimeoutError` for deadlines).
        """
        engine = self.engine
        progress = _Progress()
        with (
            engine.errors_mapped(url=request.url, may_be_sent=progress),
            anyio.fail_after(request.timeout.total),
        ):
            http_request = self._build(request, progress.trace)
            http_request.stream = engine.body_type(request.body)
            response = await self._send(http_request)
            try:
                content, truncated = await _read_capped(
                    response, request.max_response_bytes, engine
                )
            finally:
                await response.aclose()
        return HTTPResponse(response.status_code, response.headers, content, truncated)

    async def aclose(self) -> None:
        """Close the client if this transport created it (or was handed it)."""
        if self._owns_client:
            await cast("Any", self._client).aclose()


def _in_memory(response: Any, limit: int) -> tuple[bytes, bool] | None:  # noqa: ANN401 -- a Response
    """The body of a response built in memory (a mock's), already decoded; None for a stream."""
    if not response.is_stream_consumed:
        return None
    content = cast("bytes", response.content)
    return content[:limit], len(content) > limit


def _body(response: Any, limit: int, engine: Engine) -> CappedBody:  # noqa: ANN401 -- a Response
    """Where the raw body is read into, inflated within the limit.

    Raises:
        DecodingError: the library's, for an encoding the SDK does not decode.
    """
    try:
        return CappedBody(
            limit, response.headers.get("content-encoding", ""), status=response.status_code
        )
    except UndecodableError as exc:
        raise _undecodable(engine, response, exc) from None


def _content(body: CappedBody, response: Any, engine: Engine) -> tuple[bytes, bool]:  # noqa: ANN401
    """The body read, and whether it was cut at the limit.

    Raises:
        DecodingError: the library's, for compressed data that is corrupt or cut short.
    """
    try:
        return body.content()
    except UndecodableError as exc:
        raise _undecodable(engine, response, exc) from None


def _undecodable(engine: Engine, response: Any, exc: UndecodableError) -> Exception:  # noqa: ANN401
    """The library's own DecodingError for a body the SDK cannot decode."""
    return cast("Exception", engine.module.DecodingError(str(exc), request=response.request))


async def _read_capped(
    response: Any,  # noqa: ANN401 -- an httpx or httpx2 Response
    limit: int,
    engine: Engine,
) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the decoded body; say whether more was left unread.

    A compressed body is read raw and inflated within the limit (`CappedBody`).
    """
    declared: str = response.headers.get("content-length", "")
    if (
        declared.isascii()  # "²".isdigit() is True, and int() refuses it
        and declared.isdigit()
        and int(declared) <= limit
        and not response.headers.get("content-encoding")
    ):
        return cast("bytes", await response.aread()), False
    known = _in_memory(response, limit)
    if known is not None:
        return known
    body = _body(response, limit, engine)
    # aiter_raw() is an async generator: close it when we stop early, not at GC time.
    chunks = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
    async with contextlib.aclosing(chunks) as stream:
        async for raw in stream:
            try:
                full = body.add(raw)
            except UndecodableError as exc:
                await _abandon(response, stream, limit, engine.module.HTTPError)
                raise _undecodable(engine, response, exc) from None
            if full:
                await _abandon(response, stream, limit, engine.module.HTTPError)
                break
    return _content(body, response, engine)


async def _abandon(
    response: Any,  # noqa: ANN401 -- an httpx or httpx2 Response
    stream: AsyncGenerator[bytes, None],
    limit: int,
    errors: type[BaseException],
) -> None:
    """Stop reading a body half-way, leaving no half-consumed async generator behind.

    The libraries read a body through nested async generators, and closing the outermost one
    leaves the inner ones to the garbage collector (trio then warns, with a ResourceWarning;
    httpx issue 3686). Closing the response closes the connection; the generators then run
    out on the closed socket (or the few bytes already buffered), each to its end. A stream
    that does not stop when closed (a mock or in-process transport) is read no further than
    another `limit` bytes.
    """
    await response.aclose()
    drained = 0
    with contextlib.suppress(errors):
        async for chunk in stream:
            drained += len(chunk)
            if drained > limit:
                return


# --- the blocking shell ---------------------------------------------------------------------

#: The shortest timeout a phase gets once the deadline has (nearly) run out: a socket timeout
#: of 0 would make the socket non-blocking, and fail as an error rather than a timeout.
_LAST_MOMENT: Final = 0.001


class _Limits(Mapping[str, float | None]):
    """An attempt's timeouts as httpcore reads them, bounded by what is left of its deadline.

    httpcore reads `request.extensions["timeout"]` (`connect`, `write`, `read`, `pool`) as each
    phase of the exchange starts, and a blocking socket has no deadline of its own; so each
    value is worked out when read: at most what is left of `Timeout.total`. Between the chunks of
    a body the transport checks `expired()` itself, so a server that drips its reply cannot
    stretch the attempt past its deadline by more than one wait between two chunks.
    """

    __slots__ = ("_connect", "_deadline")

    _KEYS: Final = ("connect", "read", "write", "pool")

    def __init__(self, timeout: Timeout) -> None:
        self._connect = timeout.connect
        self._deadline = None if timeout.total is None else time.monotonic() + timeout.total

    def __getitem__(self, key: str) -> float | None:
        if key not in self._KEYS:
            raise KeyError(key)
        deadline = self._deadline
        if deadline is None:
            return self._connect if key == "connect" else None
        left = max(deadline - time.monotonic(), _LAST_MOMENT)
        if key == "connect" and self._connect is not None:
            return min(self._connect, left)
        return left

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def expired(self) -> bool:
        """Whether the attempt's deadline has run out."""
        return self._deadline is not None and time.monotonic() >= self._deadline - _LAST_MOMENT


class SyncHttpxFamilyTransport(_HoldsClient[_ClientT], SyncBaseTransport):
    """A blocking transport on an httpx-family `Client`; see `SyncHttpx2Transport`.

    Args:
        client: a caller-owned client (proxies, mTLS, HTTP/2, mocks); the transport never closes
            it unless `close_client` says so. Without one, the transport creates and owns a
            client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `close()` closes it too.
    """

    __slots__ = ()

    _client_class = "Client"
    _pool_class = "HTTPTransport"

    def _send(self, http_request: Any) -> Any:  # noqa: ANN401 -- the library's types
        """Send through the owned pool directly, or through the caller's client (as async)."""
        direct = self._direct
        if direct is None:
            return cast("Any", self._client).send(http_request, stream=True, follow_redirects=False)
        response = direct.handle_request(http_request)
        response.request = http_request
        return response

    def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`.

        Raises:
            APIConnectionError: no complete response (`APITimeoutError` for deadlines).
        """
        engine = self.engine
        progress = _Progress()
        limits = _Limits(request.timeout)
        with engine.errors_mapped(url=request.url, may_be_sent=progress, expired=limits.expired):
            http_request = self._build(request, progress.saw)
            http_request.extensions["timeout"] = limits
            response = self._send(http_request)
            try:
                content, truncated = _read_within(
                    response, request.max_response_bytes, limits, engine
                )
            finally:
                response.close()
        return HTTPResponse(response.status_code, response.headers, content, truncated)

    def close(self) -> None:
        """Close the client if this transport created it (or was handed it)."""
        if self._owns_client:
            cast("Any", self._client).close()


def _read_within(
    response: Any,  # noqa: ANN401 -- an httpx or httpx2 Response
    limit: int,
    limits: _Limits,
    engine: Engine,
) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the decoded body, chunk by chunk, within the deadline.

    A compressed body is read raw and inflated within the limit (`CappedBody`).

    Raises:
        TimeoutError: the attempt's deadline ran out between two chunks.
    """
    known = _in_memory(response, limit)
    if known is not None:
        return known
    body = _body(response, limit, engine)
    for raw in response.iter_raw():
        try:
            if body.add(raw):
                break  # closing the response, unread, closes its connection
        except UndecodableError as exc:
            raise _undecodable(engine, response, exc) from None
        if limits.expired():
            raise TimeoutError("the body was still arriving when the deadline ran out")
    return _content(body, response, engine)
