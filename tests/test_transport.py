"""Both transports over real loopback sockets: deadlines, drops, refusals and the slot limiter.

Tests taking `transport_name` run on httpx (asyncio and trio) and on aiohttp (asyncio only).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from quickchat_async import (
    APIConnectionError,
    APITimeoutError,
    AsyncQuickchat,
    ChatRequest,
    HTTPResponse,
    HttpxTransport,
    Timeout,
)

from .conftest import API_KEY, SCENARIO_ID, TOKEN, library_frames_with_locals


pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.SocketStream, bytes], Awaitable[None]]
OK_BODY = json.dumps({"conv_id": "c-1", "reply": "Hi!", "ord_number": 3, "src": 0}).encode()


def ok_response(body: bytes = OK_BODY) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
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


@pytest.fixture(name="serve")
async def _serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
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


def client_for(server: Server, transport_name: str = "httpx", **kwargs) -> AsyncQuickchat:
    return AsyncQuickchat(
        token=TOKEN,
        scenario_id=SCENARIO_ID,
        base_url=server.url,
        transport=transport_name,
        **kwargs,
    )


async def test_round_trip_over_a_socket(serve, transport_name):
    """A real request carries the Bearer token and JSON body; keep-alive reuses the socket."""

    async def answer(stream, request):
        await stream.send(ok_response())

    server = await serve(answer)
    async with client_for(server, transport_name) as client:
        await client.say("Hello!")
        reply = await client.say("Again", conv_id="c-1")

    assert reply.text == "Hi!"
    assert server.connections == 1
    head, _, body = server.requests[1].partition(b"\r\n\r\n")
    assert f"Authorization: Bearer {TOKEN}".encode() in head
    assert json.loads(body) == {"scenario_id": SCENARIO_ID, "conv_id": "c-1", "text": "Again"}


async def test_connection_refused_is_retried_then_raised(caplog, transport_name):
    """Nobody listening: retried max_retries times, then APIConnectionError, nothing sent."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connecting is refused
    client = AsyncQuickchat(
        token=TOKEN,
        scenario_id=SCENARIO_ID,
        base_url=f"http://127.0.0.1:{port}",
        transport=transport_name,
    )

    with caplog.at_level(logging.INFO, logger="quickchat_async"):
        async with client:
            with pytest.raises(APIConnectionError, match="could not connect") as info:
                await client.say("Hello!")

    assert not info.value.outcome_unknown
    retries = [r for r in caplog.records if r.name == "quickchat_async"]
    assert len(retries) == 2


async def test_dropped_after_reading_is_ambiguous(serve, transport_name):
    """The server reads the message and hangs up: outcome unknown, not retried."""

    async def hang_up(stream, request):
        await stream.aclose()

    server = await serve(hang_up)
    async with client_for(server, transport_name) as client:
        with pytest.raises(APIConnectionError, match="may or may not have recorded") as info:
            await client.say("Hello!")

    assert info.value.outcome_unknown
    assert len(server.requests) == 1


async def test_drip_hits_the_overall_deadline(serve, transport_name):
    """A body dripped a byte at a time cannot outlast the per-attempt deadline."""

    async def drip(stream, request):
        await stream.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        while True:
            await stream.send(b" ")
            await anyio.sleep(0.05)

    server = await serve(drip)
    async with client_for(
        server, transport_name, timeout=Timeout(total=0.6, connect=0.5)
    ) as client:
        with anyio.fail_after(5):
            with pytest.raises(APITimeoutError, match="per-attempt deadline") as info:
                await client.say("Hello!")

    assert info.value.outcome_unknown
    assert len(server.requests) == 1


async def test_slow_headers_time_out(serve, transport_name):
    """Headers slower than the deadline: APITimeoutError, outcome unknown, not retried."""

    async def never(stream, request):
        await anyio.sleep_forever()

    server = await serve(never)
    async with client_for(server, transport_name, timeout=0.4) as client:
        with anyio.fail_after(5), pytest.raises(APITimeoutError) as info:
            await client.say("Hello!")

    assert info.value.outcome_unknown
    assert len(server.requests) == 1


class StuckTransport:
    """A transport whose first send never finishes, until released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.sent = 0

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        self.sent += 1
        await self.release.wait()
        return HTTPResponse(200, {}, OK_BODY)

    async def aclose(self) -> None:
        pass


async def test_slots_wait_within_the_deadline():
    """With every slot busy, a turn waits for one; past its deadline it fails, unsent."""
    transport = StuckTransport()
    client = AsyncQuickchat(
        token=TOKEN,
        scenario_id=SCENARIO_ID,
        transport=transport,
        max_connections=1,
        timeout=0.3,
        max_retries=0,
    )
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(client.say, "first")
        await anyio.sleep(0.05)
        with pytest.raises(APITimeoutError, match="connection slots") as info:
            await client.say("second")
        transport.release.set()

    assert not info.value.outcome_unknown
    assert transport.sent == 1


async def test_slot_wait_counts_against_the_deadline():
    """A turn that waited for a slot gets only what is left of its deadline."""
    transport = StuckTransport()
    seen: list[float | None] = []

    async def send(request: ChatRequest, /) -> HTTPResponse:
        seen.append(request.timeout.total)
        return await StuckTransport.send(transport, request)

    transport.send = send  # type: ignore[method-assign]
    client = AsyncQuickchat(
        token=TOKEN, scenario_id=SCENARIO_ID, transport=transport, max_connections=1, timeout=5
    )
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(client.say, "first")
        tg.start_soon(client.say, "second")
        await anyio.sleep(0.3)
        transport.release.set()

    assert seen[0] == 5
    assert seen[1] is not None
    assert seen[1] < 4.9


async def test_waiting_turns_proceed_when_a_slot_frees(serve, transport_name):
    """More turns than slots all complete, never more than max_connections at once."""
    in_flight = 0
    peak = 0

    async def count(stream, request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        await stream.send(ok_response())

    server = await serve(count)
    async with (
        client_for(server, transport_name, max_connections=3) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(12):
            tg.start_soon(client.say, "hi")

    assert len(server.requests) == 12
    assert peak <= 3


async def test_transport_alone():
    """HttpxTransport can be used on its own, as the Transport protocol describes."""
    transport = HttpxTransport()
    request = ChatRequest("http://127.0.0.1:9/chat", {}, b"{}")

    assert repr(request) == "<ChatRequest POST http://127.0.0.1:9/chat>"
    async with transport:
        with pytest.raises(APIConnectionError):
            await transport.send(request)
    assert transport.client.is_closed


@pytest.mark.parametrize("flavor", ["token", "api_key"])
async def test_tracebacks_with_locals_hide_credentials(serve, transport_name, flavor):
    """A transport failure formatted with every frame's locals shows no credential."""

    async def hang_up(stream, request):
        await stream.aclose()

    server = await serve(hang_up)
    secret = {"token": TOKEN, "api_key": API_KEY}[flavor]
    client = AsyncQuickchat(
        scenario_id=SCENARIO_ID, base_url=server.url, transport=transport_name, **{flavor: secret}
    )
    async with client:
        with pytest.raises(APIConnectionError) as info:
            await client.say("Hello!")

    formatted = library_frames_with_locals(info.value)
    assert secret not in formatted
    assert "send" in formatted  # the frames themselves are still there


class TestSlots:
    async def test_waiters_are_served_in_call_order(self):
        """Turns waiting for a connection slot get it in the order they asked."""
        order: list[str] = []
        transport = StuckTransport()

        async def send(request: ChatRequest, /) -> HTTPResponse:
            order.append(json.loads(request.body)["text"])
            if len(order) == 1:
                await transport.release.wait()
            return HTTPResponse(200, {}, OK_BODY)

        transport.send = send  # type: ignore[method-assign]
        client = AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, transport=transport, max_connections=1
        )
        async with client, anyio.create_task_group() as tg:
            for text in ["first", "second", "third", "fourth"]:
                tg.start_soon(client.say, text)
                await anyio.wait_all_tasks_blocked()
            transport.release.set()

        assert order == ["first", "second", "third", "fourth"]
