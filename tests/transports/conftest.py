"""Loopback servers whose every byte a test scripts, for the transports' tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from quickchat_async import AsyncQuickchat
from tests.conftest import SCENARIO_ID, TOKEN


Handler = Callable[[anyio.abc.SocketStream, bytes], Awaitable[None]]
OK_BODY = b'{"conv_id": "c-1", "reply": "Hi!", "ord_number": 3, "src": 0}'


def ok_response(body: bytes = OK_BODY, *headers: bytes) -> bytes:
    """A 200 with a JSON body and its Content-Length."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + b"".join(header + b"\r\n" for header in headers)
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def read_request(stream: anyio.abc.SocketStream) -> bytes:
    """Read one HTTP/1.1 request (headers and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += await stream.receive()
    return head + b"\r\n\r\n" + body


def header_values(request: bytes, name: str) -> list[str]:
    """The values of one header of a raw request, in any spelling."""
    head = request.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    return [
        line.split(":", 1)[1].strip()
        for line in head
        if line.split(":", 1)[0].strip().lower() == name.lower()
    ]


class Server:
    """A tiny loopback HTTP server whose behaviour each test scripts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                while True:
                    request = await read_request(stream)
                    self.requests.append(request)
                    await self.handler(stream, request)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass


Serve = Callable[[Handler], Awaitable[Server]]


@pytest.fixture(name="serve")
async def _serve() -> AsyncIterator[Serve]:
    """Start loopback servers for a test; all stop when it ends."""
    async with anyio.create_task_group() as tg:

        async def run(listener: anyio.abc.SocketListener, server: Server) -> None:
            async with listener:
                await listener.serve(server.serve)

        async def start(handler: Handler) -> Server:
            server = Server(handler)
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            server.port = listener.extra(SocketAttribute.local_port)
            tg.start_soon(run, listener, server)
            return server

        yield start
        tg.cancel_scope.cancel()


def client_for(url: str, transport_name: str, **options: object) -> AsyncQuickchat:
    """A current-flavor client with the test credentials, on the named engine."""
    options.setdefault("token", TOKEN)
    options.setdefault("scenario_id", SCENARIO_ID)
    return AsyncQuickchat(base_url=url, transport=transport_name, **options)  # type: ignore[arg-type]


def refused_port() -> int:
    """A loopback port nobody listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A listening port whose accept queue is full: connecting to it hangs (no RST)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # Linux queues backlog + 1 connection, then drops SYNs
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]
