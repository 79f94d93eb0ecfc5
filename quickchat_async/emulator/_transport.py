"""The in-process adapters: httpx2 transports that call the service core, with no socket.

`httpx2.AsyncClient(transport=EmulatorTransport(service))` and, for blocking code,
`httpx2.Client(transport=SyncEmulatorTransport(service))` talk to the emulator as if it were
served, and each action fails the way httpx2 fails on a real socket: a dropped connection raises
`httpx2.RemoteProtocolError`, a truncated body `httpx2.RemoteProtocolError` after the bytes that
did arrive, a reset `httpx2.ReadError`. Delays honour the request's read timeout, raising
`httpx2.ReadTimeout` when a wait (for the headers or between dripped chunks) is longer.

How an outcome is delivered (what waits, what bytes, what failure, in which order) is worked out
once, as a sequence of steps (`_opening`, `_body`); the async adapter sleeps with anyio (asyncio
and trio), the blocking one with `time.sleep` (threads, or gevent once monkey-patched).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx2

from ._outcome import Action, Outcome, text_outcome
from ._service import MAX_REQUEST_BYTES, EmulatorService


__all__ = ["EmulatorTransport", "SyncEmulatorTransport"]

#: A step of delivering an outcome: seconds to wait, or bytes of the body to hand over.
_Step = float | bytes


def _outcome(service: EmulatorService, request: httpx2.Request, body: bytes) -> Outcome:
    """What the emulator answers, as the served app routes it."""
    limit = getattr(service, "max_request_bytes", MAX_REQUEST_BYTES)  # a stand-in's
    if len(body) > limit and request.url.path == "/chat":
        return service.refuse_too_large(len(body))
    if request.url.path != "/chat":
        return text_outcome(404, "Not Found")
    if request.method != "POST":
        return text_outcome(405, "Method Not Allowed", headers=(("allow", "POST"),))
    return service.handle_chat(request.headers, body)


def _read_timeout(request: httpx2.Request) -> float | None:
    timeouts = request.extensions.get("timeout", {})
    return timeouts.get("read")  # type: ignore[no-any-return]


def _wait(seconds: float, read_timeout: float | None, request: httpx2.Request) -> Iterator[float]:
    """Wait, or time out as a socket read would if the wait is longer than the read timeout."""
    if read_timeout is not None and seconds > read_timeout:
        yield read_timeout
        raise httpx2.ReadTimeout("timed out", request=request)
    yield seconds


def _opening(outcome: Outcome, request: httpx2.Request) -> Iterator[float]:
    """What happens before the response starts: the delay, then, for `DROP`, the failure."""
    if outcome.delay:
        yield from _wait(outcome.delay, _read_timeout(request), request)
    if outcome.action is Action.DROP:
        raise httpx2.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )


def _body(
    outcome: Outcome,
    request: httpx2.Request,
    read_timeout: float | None,
    closed: Callable[[], bool],
) -> Iterator[_Step]:
    """The body of an outcome, delivered as its action says; `closed()` is the client leaving."""
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
                yield from _wait(outcome.interval, read_timeout, request)
            if closed():
                return
            yield body[start : start + outcome.chunk_size]
        return
    if body:
        yield body
    if outcome.action is Action.ENDLESS:
        while not closed():
            yield from _wait(outcome.interval, read_timeout, request)
            yield outcome.filler


def _response(outcome: Outcome, request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        outcome.status,
        headers=list(outcome.headers),
        stream=_OutcomeStream(outcome, request),
        request=request,
        extensions={"http_version": b"HTTP/1.1"},
    )


class _OutcomeStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """The body of an outcome, delivered as its action says, to an async or a blocking client."""

    def __init__(self, outcome: Outcome, request: httpx2.Request) -> None:
        self._steps = _body(outcome, request, _read_timeout(request), self._is_closed)
        self._closed = False

    def _is_closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """The client closed the response: stop, as a closed socket delivers nothing more."""
        self._closed = True

    def close(self) -> None:
        """The client closed the response: stop, as a closed socket delivers nothing more."""
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self._steps:
            if isinstance(step, bytes):
                yield step
            else:
                await anyio.sleep(step)

    def __iter__(self) -> Iterator[bytes]:
        for step in self._steps:
            if isinstance(step, bytes):
                yield step
            else:
                time.sleep(step)


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
        outcome = _outcome(self.service, request, await request.aread())
        for seconds in _opening(outcome, request):
            await anyio.sleep(seconds)
        return _response(outcome, request)


class SyncEmulatorTransport(httpx2.BaseTransport):
    """The blocking twin of `EmulatorTransport`, for `httpx2.Client` (threads, or gevent).

    Args:
        service: the emulator to talk to (it is thread-safe).
    """

    def __init__(self, service: EmulatorService) -> None:
        self.service = service

    def __repr__(self) -> str:
        return f"<SyncEmulatorTransport {self.service!r}>"

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request as the emulator decides, failing as a real socket would."""
        outcome = _outcome(self.service, request, request.read())
        for seconds in _opening(outcome, request):
            time.sleep(seconds)
        return _response(outcome, request)
