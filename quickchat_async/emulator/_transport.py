"""The in-process adapter: an httpx2 transport that calls the service core, with no socket.

`httpx2.AsyncClient(transport=EmulatorTransport(service))` talks to the emulator as if it were
served, and each action fails the way httpx2 fails on a real socket: a dropped connection raises
`httpx2.RemoteProtocolError`, a truncated body `httpx2.RemoteProtocolError` after the bytes that
did arrive, a reset `httpx2.ReadError`. Delays honour the request's read timeout, raising
`httpx2.ReadTimeout` when a wait (for the headers or between dripped chunks) is longer. Only
anyio is used, so it works on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2

from ._outcome import Action, Outcome, text_outcome
from ._service import MAX_REQUEST_BYTES, EmulatorService


__all__ = ["EmulatorTransport"]


async def _wait(seconds: float, read_timeout: float | None, request: httpx2.Request) -> None:
    """Sleep, or time out as a socket read would if the wait is longer than the read timeout."""
    if read_timeout is not None and seconds > read_timeout:
        await anyio.sleep(read_timeout)
        raise httpx2.ReadTimeout("timed out", request=request)
    await anyio.sleep(seconds)


class _OutcomeStream(httpx2.AsyncByteStream):
    """The body of an outcome, delivered as its action says."""

    def __init__(
        self, outcome: Outcome, request: httpx2.Request, read_timeout: float | None
    ) -> None:
        self._outcome = outcome
        self._request = request
        self._read_timeout = read_timeout
        self._closed = False

    async def aclose(self) -> None:
        """The client closed the response: stop, as a closed socket delivers nothing more."""
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        outcome, request = self._outcome, self._request
        body = outcome.body
        if outcome.action is Action.TRUNCATE:
            yield body[: outcome.cut_after]
            raise httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {outcome.cut_after} bytes, expected {len(body)})",
                request=request,
            )
        if outcome.action is Action.RESET:
            yield body[: outcome.cut_after]
            raise httpx2.ReadError("[Errno 104] Connection reset by peer", request=request)
        if outcome.action is Action.DRIP:
            for start in range(0, len(body), outcome.chunk_size):
                if start:
                    await _wait(outcome.interval, self._read_timeout, request)
                if self._closed:
                    return
                yield body[start : start + outcome.chunk_size]
            return
        if body:
            yield body
        if outcome.action is Action.ENDLESS:
            while not self._closed:
                await _wait(outcome.interval, self._read_timeout, request)
                yield outcome.filler


class EmulatorTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that serves `POST /chat` from an `EmulatorService`, in process.

    Any host is accepted; other paths get a 404 and other methods a 405, as the served app
    does. The `/_emulator/...` routes are not served: use the service's Python API.

    Args:
        service: the emulator to talk to.
    """

    def __init__(self, service: EmulatorService) -> None:
        self.service = service

    def __repr__(self) -> str:
        return f"<EmulatorTransport {self.service!r}>"

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request as the emulator decides, failing as a real socket would."""
        body = await request.aread()
        limit = getattr(self.service, "max_request_bytes", MAX_REQUEST_BYTES)  # a stand-in's
        if len(body) > limit and request.url.path == "/chat":
            outcome = self.service.refuse_too_large(len(body))
        elif request.url.path != "/chat":
            outcome = text_outcome(404, "Not Found")
        elif request.method != "POST":
            outcome = text_outcome(405, "Method Not Allowed", headers=(("allow", "POST"),))
        else:
            outcome = self.service.handle_chat(request.headers, body)
        timeouts = request.extensions.get("timeout", {})
        read_timeout: float | None = timeouts.get("read")
        if outcome.delay:
            await _wait(outcome.delay, read_timeout, request)
        if outcome.action is Action.DROP:
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx2.Response(
            outcome.status,
            headers=list(outcome.headers),
            stream=_OutcomeStream(outcome, request, read_timeout),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )
