"""The network adapter: a Starlette app that serves the service core over HTTP.

Routes:

- `POST /chat`: the Chat endpoint, both flavors (`EmulatorService.handle_chat`). A body larger
  than `EmulatorService.max_request_bytes` (1 MiB by default) gets a 413 as soon as it passes
  the limit (or at once, by its Content-Length): the rest is never read or held.
- `GET /_emulator/conversations`, `GET /_emulator/conversations/{conv_id}`: the record.
- `GET /_emulator/stats`: request counters.
- `GET /_emulator/faults`, `POST /_emulator/faults`: see or script faults
  (`FaultInjector.configure`), for an emulator running in another process.
- `POST /_emulator/reset`: `EmulatorService.reset()`.

Connection-level actions (drop, truncate, reset) need the socket, which ASGI does not expose.
Under uvicorn, the `send` callable an app receives is a method of uvicorn's request cycle, which
holds the asyncio transport: the app's outermost layer keeps it before Starlette wraps `send`.
`transport.close()` then ends the connection with a FIN, and `abort()` after `SO_LINGER` 0 with
an RST. Under another server these actions raise `RuntimeError`.

While an action is under way (delays, drips, endless bodies), the app listens for the client's
disconnection and stops, so no handler outlives its client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any, Protocol

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ._outcome import Action, Outcome, dump_json
from ._service import EmulatorService


__all__ = ["create_app"]

_TRANSPORT = "quickchat_async.emulator.transport"
_NEEDS_TRANSPORT = frozenset({Action.DROP, Action.TRUNCATE, Action.RESET})
#: How long a handler waits for the client to notice a closed connection.
_DISCONNECT_GRACE = 5.0


class _Transport(Protocol):
    """The part of asyncio's transport the app uses."""

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...  # noqa: ANN401


def _server_transport(send: Send) -> _Transport | None:
    """The connection's transport, from uvicorn's `send` method; None under another server."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if all(
        callable(getattr(transport, m, None))
        for m in ("close", "abort", "is_closing", "get_extra_info")
    ):
        return transport
    return None


class _EmulatorApp(Starlette):
    """Starlette, keeping the server's transport in the scope before anything wraps `send`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_TRANSPORT] = _server_transport(send)
        await super().__call__(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | int | None:
    """The whole request body; its size so far once it passes `limit`; None if the client left.

    The body is read as it streams in and never held past the limit: the rest is not read.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return size
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_size(scope: Scope) -> int | None:
    """The request's Content-Length, if it sent a valid one."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


def _start(outcome: Outcome) -> Message:
    return {
        "type": "http.response.start",
        "status": outcome.status,
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers],
    }


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def _cut(transport: _Transport, *, reset: bool) -> None:
    """End the connection now: with an RST if `reset`, else with a FIN after pending data."""
    if transport.is_closing():  # the client left first: nothing to cut
        return
    if reset:
        sock = transport.get_extra_info("socket")
        # linger 0: close() sends an RST instead of a FIN. A socket the client's leaving closed
        # meanwhile (EBADF) needs no reset.
        with contextlib.suppress(OSError):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _enact(outcome: Outcome, send: Send, transport: _Transport | None) -> None:
    """Deliver an outcome; returns once done, or waits for the client to leave after a cut."""
    await anyio.sleep(outcome.delay)
    action, body = outcome.action, outcome.body
    if action is Action.DROP and transport is not None:
        _cut(transport, reset=False)
        await anyio.sleep(_DISCONNECT_GRACE)
        return
    await send(_start(outcome))
    if action in {Action.TRUNCATE, Action.RESET} and transport is not None:
        await send(_body(body[: outcome.cut_after], more=True))
        await anyio.sleep(outcome.interval)
        _cut(transport, reset=action is Action.RESET)
        await anyio.sleep(_DISCONNECT_GRACE)
    elif action is Action.DRIP:
        for start in range(0, len(body), outcome.chunk_size):
            if start:
                await anyio.sleep(outcome.interval)
            await send(_body(body[start : start + outcome.chunk_size], more=True))
        await send(_body(b"", more=False))
    elif action is Action.ENDLESS:
        await send(_body(body, more=True))
        while True:
            await anyio.sleep(outcome.interval)
            await send(_body(outcome.filler, more=True))
    else:
        await send(_body(body, more=False))


class _ChatEndpoint:
    """`POST /chat`, as a raw ASGI app: it needs `receive` to notice disconnections."""

    def __init__(self, service: EmulatorService) -> None:
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self._service
        limit = service.max_request_bytes
        declared = _declared_size(scope)
        body = (
            declared
            if declared is not None and declared > limit
            else await _read_body(receive, limit)
        )
        if body is None:
            return
        if isinstance(body, int):  # too large: answered without reading the rest
            outcome = service.refuse_too_large(body)
            await send(
                {
                    **_start(outcome),
                    "headers": [*_start(outcome)["headers"], (b"connection", b"close")],
                }
            )
            await send(_body(outcome.body, more=False))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        outcome = service.handle_chat(headers, body)
        transport: _Transport | None = scope.get(_TRANSPORT)
        if transport is None and outcome.action in _NEEDS_TRANSPORT:
            raise RuntimeError(f"The {outcome.action.value} action needs uvicorn's transport.")
        async with anyio.create_task_group() as tasks:

            async def stop_when_client_leaves() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tasks.cancel_scope.cancel()

            tasks.start_soon(stop_when_client_leaves)
            await _enact(outcome, send, transport)
            tasks.cancel_scope.cancel()


def _json(data: object, status: int = 200) -> Response:
    return Response(dump_json(data), status_code=status, media_type="application/json")


def _text(text: str, status: int) -> Response:
    return Response(text, status_code=status, media_type="text/plain")


def create_app(service: EmulatorService) -> Starlette:
    """The emulator as an ASGI app, for uvicorn (see `serve`).

    Args:
        service: the service core that decides every `/chat` response.
    """

    async def conversations(_: Request) -> Response:
        return _json({"conversations": [c.to_dict() for c in service.conversations()]})

    async def conversation(request: Request) -> Response:
        conv_id: str = request.path_params["conv_id"]
        try:
            return _json(service.conversation(conv_id).to_dict())
        except KeyError:
            return _text(f"No conversation {conv_id}", 404)

    async def stats(_: Request) -> Response:
        return _json(service.stats().to_dict())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                service.faults.configure(await request.json())
            except ValueError as exc:  # also malformed JSON
                return _text(f"Bad faults command: {exc}", 400)
        return _json(service.faults.to_dict())

    async def reset(_: Request) -> Response:
        service.reset()
        return _json({"reset": True})

    return _EmulatorApp(
        routes=[
            Route("/chat", _ChatEndpoint(service), methods=["POST"]),
            Route("/_emulator/conversations", conversations, methods=["GET"]),
            Route("/_emulator/conversations/{conv_id}", conversation, methods=["GET"]),
            Route("/_emulator/stats", stats, methods=["GET"]),
            Route("/_emulator/faults", faults, methods=["GET", "POST"]),
            Route("/_emulator/reset", reset, methods=["POST"]),
        ]
    )
