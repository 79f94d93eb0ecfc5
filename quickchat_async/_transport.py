"""The transport seam: one async `send()` of a prepared chat request, plus `aclose()`.

The client builds a `ChatRequest` (URL, headers, JSON body, limits), hands it to a `Transport`,
and gets back an `HTTPResponse` with a bounded body, or one of the SDK's connection errors. The
default transport runs on httpx; anything with the same two methods can stand in (an aiohttp
one for fan-out speed, a fake in tests).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

import anyio
import attrs
import httpx

from ._exceptions import map_httpx_errors
from ._version import __version__


if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ChatRequest", "HTTPResponse", "HttpxTransport", "Timeout", "Transport"]

#: The largest reply body the SDK reads by default. Chat replies are a few KB.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024


@attrs.frozen(slots=True)
class Timeout:
    """How long one attempt may take.

    Attributes:
        total: the whole attempt (waiting for a connection slot, connecting, sending, waiting for
            and reading the reply) must end within this many seconds. It also bounds a server that
            drips bytes, which a per-read timeout alone would not catch. None: no limit.
        connect: opening a connection must succeed within this many seconds. None: no limit.
    """

    total: float | None = 30.0
    connect: float | None = 5.0

    def __attrs_post_init__(self) -> None:
        for name in ("total", "connect"):
            value: object = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            ):
                msg = f"Timeout.{name} must be a positive number of seconds or None, not {value!r}"
                raise ValueError(msg)

    @classmethod
    def of(cls, value: object) -> Timeout:
        """Build a Timeout from the client's `timeout` argument."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(total=None, connect=None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            msg = f"timeout must be a number of seconds, a Timeout or None, not {value!r}"
            raise TypeError(msg)
        total = float(value)
        return cls(total=total, connect=min(5.0, total) if math.isfinite(total) else 5.0)

    def as_httpx(self) -> httpx.Timeout:
        """The same limits as httpx's per-operation timeouts."""
        return httpx.Timeout(self.total, connect=self.connect)


@attrs.frozen(slots=True, repr=False)
class ChatRequest:
    """One prepared POST to the Chat endpoint.

    Its repr shows only the URL: the headers and body may hold a credential. Tools that walk
    attrs fields instead of calling repr (rich's pretty printer and its tracebacks with locals)
    skip them too.

    Attributes:
        url: the absolute URL to POST to.
        headers: the request headers, including authentication for the current flavor.
        body: the JSON body, already encoded.
        timeout: the limits for this attempt.
        max_response_bytes: read at most this much of the response body.
    """

    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    timeout: Timeout = Timeout()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __repr__(self) -> str:
        return f"<ChatRequest POST {self.url}>"


@attrs.frozen(slots=True, repr=False)
class HTTPResponse:
    """An HTTP response with its body read (up to the limit).

    Attributes:
        status_code: the HTTP status.
        headers: the response headers; lookups must be case-insensitive.
        content: the body, or its first `max_response_bytes` when `truncated`.
        truncated: True when the body was longer than the SDK will read.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes = attrs.field(repr=False)  # a server may echo a credential
    truncated: bool = False

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<HTTPResponse [{self.status_code}] {len(self.content)} bytes>"


@runtime_checkable
class Transport(Protocol):
    """What the client needs from an HTTP engine.

    `send` POSTs the request and returns the response with its body read, never more than
    `request.max_response_bytes` of it. It never follows redirects. It raises
    `APIConnectionError` (or `APITimeoutError`) when no complete response arrives, with
    `outcome_unknown=False` only when no byte of the request can have reached the server.
    `aclose` releases the connections; closing twice is harmless.
    """

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """Send one chat request and return its response."""
        ...

    async def aclose(self) -> None:
        """Release the transport's resources."""
        ...


USER_AGENT = f"quickchat-async/{__version__} httpx/{httpx.__version__}"


class _Progress:
    """Follows one request through httpcore's trace events.

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


class HttpxTransport:
    """The default transport, on an `httpx.AsyncClient`.

    Args:
        client: a caller-owned client (proxies, mTLS, HTTP/2, mocks); the transport never closes
            it unless `close_client` says so. Without one, the transport creates and owns a
            client.
        max_connections: the size of the connection pool of an owned client.
        close_client: hand `client` over: `aclose()` closes it too.
    """

    __slots__ = ("_client", "_owns_client")

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        max_connections: int = 100,
        close_client: bool = False,
    ) -> None:
        self._owns_client = client is None or close_client
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The underlying httpx client."""
        return self._client

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`."""
        progress = _Progress()
        with (
            map_httpx_errors(url=request.url, may_be_sent=progress),
            anyio.fail_after(request.timeout.total),
        ):
            http_request = self._client.build_request(
                "POST",
                request.url,
                content=request.body,
                headers=request.headers,
                timeout=request.timeout.as_httpx(),
                extensions={"trace": progress.trace},
            )
            http_request.stream = _Body(request.body)
            response = await self._client.send(http_request, stream=True, follow_redirects=False)
            try:
                content, truncated = await _read_capped(response, request.max_response_bytes)
            finally:
                await response.aclose()
        return HTTPResponse(response.status_code, response.headers, content, truncated)

    async def aclose(self) -> None:
        """Close the client if this transport created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Body(httpx.AsyncByteStream):
    """A request body that httpx iterates without an async generator.

    httpx's own body stream is an async generator; cancelled or timed out while the body was
    being written, it is left half-consumed to the garbage collector, and trio warns
    (ResourceWarning; httpx issue 3686). This iterator has nothing to clean up.
    """

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._body)


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


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the (decoded) body; say whether more was left unread."""
    declared = response.headers.get("content-length", "")
    if (
        declared.isascii()  # "²".isdigit() is True, and int() refuses it
        and declared.isdigit()
        and int(declared) <= limit
        and not response.headers.get("content-encoding")
    ):
        return await response.aread(), False
    chunks: list[bytes] = []
    size = 0
    # aiter_bytes() is an async generator: close it when we stop early, not at GC time.
    body = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
    async with contextlib.aclosing(body) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                await _abandon(response, stream, limit)
                return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


async def _abandon(
    response: httpx.Response, stream: AsyncGenerator[bytes, None], limit: int
) -> None:
    """Stop reading a body half-way, leaving no half-consumed async generator behind.

    httpx reads a body through nested async generators, and closing the outermost one leaves
    the inner ones to the garbage collector (trio then warns, with a ResourceWarning; httpx
    issue 3686). Closing the response closes the connection; the generators then run out on
    the closed socket (or the few bytes already buffered), each to its end. A stream that
    does not stop when closed (a mock or in-process transport) is read no further than
    another `limit` bytes.
    """
    await response.aclose()
    drained = 0
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in stream:
            drained += len(chunk)
            if drained > limit:
                return
