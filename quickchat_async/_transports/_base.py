"""The transport seam: one `send()` of a prepared chat request, plus a way to close.

The sender builds a `ChatRequest` (URL, headers, JSON body, limits), hands it to a `Transport`
(async `send` and `aclose`) or, in the blocking client, a `SyncTransport` (`send` and `close`),
and gets back an `HTTPResponse` with a bounded body, or one of the SDK's connection errors.
Each engine's transport maps its own exceptions beside it, into the one error tree; anything
with the same two methods can stand in (a fake in tests, a wrapper that counts).
"""

from __future__ import annotations

import abc
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio.abc

from quickchat_async._models import HTTPResponse
from quickchat_async._wire import ChatRequest

from ._decoding import BoundedDecoder, UndecodableError


if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "BaseTransport",
    "CappedBody",
    "SyncBaseTransport",
    "SyncTransport",
    "Transport",
    "scrubbed",
]


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


class BaseTransport(anyio.abc.AsyncResource):
    """The base of the SDK's own transports: `async with`, and a User-Agent naming the engine.

    Attributes:
        user_agent: the User-Agent the client sends through this transport, unless the
            client's `default_headers` set one; each subclass sets it.
    """

    __slots__ = ()

    user_agent: str

    @abc.abstractmethod
    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """Send one chat request and return its response."""


@runtime_checkable
class SyncTransport(Protocol):
    """What the blocking client (`Quickchat`) needs from an HTTP engine.

    The same contract as `Transport`, blocking: `send` POSTs the request and returns the
    response with at most `request.max_response_bytes` of its body read, within
    `request.timeout`, never following redirects; it raises `APIConnectionError` (or
    `APITimeoutError`) when no complete response arrives, with `outcome_unknown=False` only when
    no byte of the request can have reached the server. It may be called from several threads
    (or greenlets) at once. `close` releases the connections; closing twice is harmless.
    """

    def send(self, request: ChatRequest, /) -> HTTPResponse:
        """Send one chat request and return its response."""
        ...

    def close(self) -> None:
        """Release the transport's resources."""
        ...


class SyncBaseTransport(abc.ABC):
    """The base of the SDK's own blocking transports: `with`, and a User-Agent naming the engine.

    Attributes:
        user_agent: the User-Agent the client sends through this transport, unless the
            client's `default_headers` set one; each subclass sets it.
    """

    __slots__ = ()

    user_agent: str

    @abc.abstractmethod
    def send(self, request: ChatRequest, /) -> HTTPResponse:
        """Send one chat request and return its response."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the transport's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class CappedBody:
    """A response body as it arrives: inflated if compressed, and kept up to a limit.

    A compressed body is inflated here (`BoundedDecoder`), never past the limit: an engine's own
    decoder would inflate each chunk whole, however large it grows. An error reply (a status
    other than 2xx) keeps its status whatever its body: one that cannot be decoded is dropped
    (read no further, kept empty), so that a 429 is still retried and a 401 still says so.

    Args:
        limit: `max_response_bytes`.
        content_encoding: the response's Content-Encoding ("" for none).
        status: the response's status code.

    Raises:
        UndecodableError: a 2xx in an encoding the SDK does not decode.
    """

    __slots__ = ("_chunks", "_decoder", "_dropped", "_limit", "_size", "_strict")

    def __init__(self, limit: int, content_encoding: str = "", *, status: int = 200) -> None:
        self._chunks: list[bytes] = []
        self._limit = limit
        self._size = 0
        self._strict = 200 <= status < 300  # noqa: PLR2004 -- the success range
        self._dropped = False
        self._decoder: BoundedDecoder | None = None
        if content_encoding:
            try:
                self._decoder = BoundedDecoder(content_encoding, limit=limit)
            except UndecodableError:
                if self._strict:
                    raise
                self._drop()

    def add(self, raw: bytes) -> bool:
        """Keep a chunk as it came; True once more than the limit has arrived (read no further).

        Raises:
            UndecodableError: corrupt compressed data in a 2xx.
        """
        if self._dropped or self._size > self._limit:
            return True  # the rest is not read
        decoder = self._decoder
        if decoder is None:
            return self._keep(raw)
        try:
            chunk = decoder.feed(raw, self._limit - self._size + 1)
        except UndecodableError:
            if self._strict:
                raise
            self._drop()
            return True
        return self._keep(chunk)

    def _keep(self, chunk: bytes) -> bool:
        """Keep a chunk already decoded; True once more than the limit is kept."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self._size > self._limit

    def _drop(self) -> None:
        """An error reply's body that cannot be decoded: keep none of it."""
        self._decoder, self._chunks, self._size, self._dropped = None, [], 0, True

    def content(self) -> tuple[bytes, bool]:
        """The body (cut at the limit), and whether it was cut.

        Raises:
            UndecodableError: a 2xx whose compressed data is corrupt or cut short.
        """
        decoder = self._decoder
        if decoder is not None and self._size <= self._limit:
            try:
                self._keep(decoder.finish(self._limit - self._size + 1))
            except UndecodableError:
                if self._strict:
                    raise
                self._drop()
        body = b"".join(self._chunks)
        if self._size > self._limit:
            return body[: self._limit], True
        return body, False


def scrubbed(exc: BaseException) -> BaseException:
    """Clear the local variables of the HTTP engine's frames in `exc` and its chain.

    Those frames can hold the request's headers and body (the token, the legacy api_key); a
    traceback formatted with locals would print them. File and line information stays.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
    return exc
