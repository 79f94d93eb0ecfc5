"""One transport for the httpx family: httpx2 (the default engine) and httpx 0.28.

The two libraries share their API, so one class sends through either; what differs, each
engine's exception classes and what they mean, is declared beside its own transport
(`_httpx2`, `_httpx`) as an `Engine`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import anyio
import attrs

from quickchat_async._exceptions import ClientClosedError, QuickchatError
from quickchat_async._models import HTTPResponse
from quickchat_async._version import __version__
from quickchat_async._wire import ChatRequest, ErrorTable, classify, deadline_error

from ._base import BaseTransport, scrubbed
from ._decoding import BoundedDecoder, UndecodableError


if TYPE_CHECKING:
    import ssl

__all__ = ["Engine", "HttpxFamilyTransport"]

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
    def errors_mapped(self, *, url: str, may_be_sent: Callable[[], bool]) -> Generator[None]:
        """Translate this library's errors and the attempt's deadline raised in the block.

        `may_be_sent()` is asked at failure time: the transport follows the request's progress,
        which tells a failure before sending (safe to retry) from an ambiguous one.
        """
        try:
            yield
        except self.module.HTTPError as exc:
            raise self.translate(exc, url=url, may_be_sent=may_be_sent()) from scrubbed(exc)
        except TimeoutError as exc:  # the per-attempt deadline (anyio.fail_after)
            raise deadline_error(url=url, cause=exc, sent=may_be_sent()) from scrubbed(exc)


@functools.cache
def _tls_context(module: ModuleType) -> ssl.SSLContext:
    """The TLS context of the engine clients the SDK makes: the engine's default, made once.

    Building one (the system's trust store, or `SSL_CERT_FILE` and `SSL_CERT_DIR`) takes some
    20 ms, and a client makes an engine client for each event loop it runs on: with
    `asyncio.run()` per call, that would be 20 ms a call.
    """
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


class _Progress:
    """Follows one request through the engine's trace events (httpcore's or httpcore2's).

    `may_be_sent` stays True unless the trace shows the request never started to go out, so a
    transport that emits no trace (a mock, another engine) errs on the side of "ambiguous".
    """

    __slots__ = ("may_be_sent",)

    def __init__(self) -> None:
        self.may_be_sent = True

    async def trace(self, event: str, _info: Mapping[str, object]) -> None:
        if event.startswith("connection."):
            self.may_be_sent = False  # (re)connecting: nothing of the request is out yet
        elif ".send_request_headers." in event:
            self.may_be_sent = True

    def __call__(self) -> bool:
        return self.may_be_sent


class HttpxFamilyTransport(BaseTransport, Generic[_ClientT]):
    """A transport on an httpx-family `AsyncClient`; see `Httpx2Transport` and `HttpxTransport`.

    Args:
        client: a caller-owned client (proxies, mTLS, HTTP/2, mocks); the transport never closes
            it unless `close_client` says so. Without one, the transport creates and owns a
            client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `aclose()` closes it too.
    """

    __slots__ = ("_client", "_owns_client", "user_agent")

    #: The library this transport sends through.
    engine: ClassVar[Engine]

    def __init__(
        self,
        client: _ClientT | None = None,
        *,
        max_connections: int = 100,
        close_client: bool = False,
    ) -> None:
        engine = self.engine
        self.user_agent = f"quickchat-async/{__version__} {engine.name}/{engine.module.__version__}"
        self._owns_client = client is None or close_client
        if client is None:
            client = cast(
                "_ClientT",
                engine.module.AsyncClient(
                    limits=engine.module.Limits(
                        max_connections=max_connections, max_keepalive_connections=max_connections
                    ),
                    headers={"User-Agent": self.user_agent},
                    follow_redirects=False,
                    verify=_tls_context(engine.module),
                ),
            )
        self._client: _ClientT = client

    def __repr__(self) -> str:
        owner = "owned" if self._owns_client else "caller's"
        return f"<{type(self).__name__} {owner} {self.engine.name}.AsyncClient>"

    @property
    def client(self) -> _ClientT:
        """The underlying AsyncClient."""
        return self._client

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`.

        Raises:
            APIConnectionError: no complete response (`APITimeoutError` for deadlines).
            ClientClosedError: the AsyncClient was closed.
        """
        engine, client = self.engine, cast("Any", self._client)
        if client.is_closed:  # the engine would raise a bare RuntimeError
            raise ClientClosedError(
                f"The {engine.name}.AsyncClient this transport sends through is closed."
            )
        progress = _Progress()
        timeout = request.timeout
        with (
            engine.errors_mapped(url=request.url, may_be_sent=progress),
            anyio.fail_after(timeout.total),
        ):
            http_request = client.build_request(
                "POST",
                request.url,
                content=request.body,
                headers=request.headers,
                timeout=engine.module.Timeout(timeout.total, connect=timeout.connect),
                extensions={"trace": progress.trace},
            )
            http_request.stream = engine.body_type(request.body)
            response = await client.send(http_request, stream=True, follow_redirects=False)
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


async def _read_capped(
    response: Any,  # noqa: ANN401 -- an httpx or httpx2 Response
    limit: int,
    engine: Engine,
) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the decoded body; say whether more was left unread.

    A compressed body is read raw and inflated here, never past the limit (`BoundedDecoder`):
    the engine's own decoder would inflate each chunk whole, however large it grows.
    """
    declared: str = response.headers.get("content-length", "")
    encoding: str = response.headers.get("content-encoding", "")
    if (
        declared.isascii()  # "²".isdigit() is True, and int() refuses it
        and declared.isdigit()
        and int(declared) <= limit
        and not encoding
    ):
        return cast("bytes", await response.aread()), False
    if response.is_stream_consumed:  # a response built in memory (a mock): already decoded
        content = cast("bytes", response.content)
        return content[:limit], len(content) > limit
    try:
        decoder = BoundedDecoder(encoding) if encoding else None
    except UndecodableError as exc:
        raise engine.module.DecodingError(str(exc), request=response.request) from None
    chunks: list[bytes] = []
    size = 0
    # aiter_raw() is an async generator: close it when we stop early, not at GC time.
    body = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
    async with contextlib.aclosing(body) as stream:
        async for raw in stream:
            try:
                chunk = raw if decoder is None else decoder.feed(raw, limit - size + 1)
            except UndecodableError as exc:
                await _abandon(response, stream, limit, engine.module.HTTPError)
                raise engine.module.DecodingError(str(exc), request=response.request) from None
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                await _abandon(response, stream, limit, engine.module.HTTPError)
                return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


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
