"""The transport seam: one async `send()` of a prepared chat request, plus `aclose()`.

The sender builds a `ChatRequest` (URL, headers, JSON body, limits), hands it to a `Transport`
and gets back an `HTTPResponse` with a bounded body, or one of the SDK's connection errors.
Each engine's transport maps its own exceptions beside it, into the one error tree; anything
with the same two methods can stand in (a fake in tests, a wrapper that counts).
"""

from __future__ import annotations

import abc
import traceback
from typing import Protocol, runtime_checkable

import anyio.abc

from quickchat_async._models import HTTPResponse
from quickchat_async._wire import ChatRequest


__all__ = ["BaseTransport", "Transport", "scrubbed"]


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
