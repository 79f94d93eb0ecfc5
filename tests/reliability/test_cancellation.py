"""Scenario 15: cancellation in every phase of a turn, by asyncio, anyio and trio.

Each test cancels a turn at one phase (waiting for a connection slot, for a pooled connection,
connecting, sending, waiting for the headers, reading the body, sleeping between retries)
through one mechanism (an asyncio task's `cancel()`, an anyio cancel scope, a trio nursery), then
checks that the cancellation propagated, the turn lock is free, no new attempt follows, nothing
leaks, and the conversation goes on.

Where a turn waits is told from the outside: by what reached the client's transport (the
`CountingTransport` every `Rule.client()` sends through) and the server, once every task of the
test's event loop is blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import anyio.abc
import attrs
import httpx2
import pytest
import stamina
from anyio.abc import SocketAttribute

from quickchat_async import APIConnectionError, AsyncQuickchat, Conversation, TurnStatus
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import CountingTransport

from .rule import TALLY, Rule


pytestmark = pytest.mark.anyio

PHASES = ["slot", "pool", "connecting", "sending", "headers", "body", "retry-sleep"]
MECHANISMS = [
    pytest.param("asyncio", "asyncio-task", id="asyncio-task"),
    pytest.param("asyncio", "anyio-scope", id="asyncio-anyio-scope"),
    pytest.param("trio", "anyio-scope", id="trio-anyio-scope"),
    pytest.param("trio", "trio-nursery", id="trio-nursery"),
]
#: A message too big for the socket buffers of a server that does not read.
BIG = "x" * (8 * 1024 * 1024)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until `condition()` holds."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 -- polling state owned by other threads
            await anyio.sleep(0.005)


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A listening port whose accept queue is full: connecting to it hangs."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


@contextlib.asynccontextmanager
async def sink() -> AsyncIterator[tuple[int, anyio.Event]]:
    """A loopback server that reads the start of a request, then stops reading."""
    receiving = anyio.Event()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()
                receiving.set()
                await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield listener.extra(SocketAttribute.local_port), receiving
        tg.cancel_scope.cancel()


class FirstToPort(httpx2.AsyncBaseTransport):
    """httpx2's own transport, except that once `port` is set, the next request goes there."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.port: int | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.port is not None:
            request.url = request.url.copy_with(port=self.port)
            self.port = None
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def cancel_turn(
    how: str, turn: Callable[[], Awaitable[object]], reached: Callable[[], Awaitable[None]]
) -> None:
    """Start `turn`, wait until it `reached` its phase, cancel it `how`; check it propagated."""
    if how == "asyncio-task":
        task = asyncio.ensure_future(turn())
        await reached()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
    elif how == "anyio-scope":
        scope = anyio.CancelScope()
        caught: list[bool] = []

        async def run() -> None:
            with scope:
                await turn()
            caught.append(scope.cancelled_caught)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await reached()
            scope.cancel()
        assert caught == [True]
    else:
        import trio  # noqa: PLC0415 -- only on trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(turn)
            await reached()
            nursery.cancel_scope.cancel()
        assert nursery.cancel_scope.cancelled_caught


@attrs.define
class Phase:
    """A started conversation whose next turn will stop in a given phase."""

    client: AsyncQuickchat
    conv: Conversation
    text: str
    #: Returns once the turn is in its phase.
    reached: Callable[[], Awaitable[None]]
    #: Whether the server counted the request (it answered, or recorded the message).
    counted: bool = False
    #: Whether the server recorded the message before the turn was cancelled.
    recorded: bool = False
    #: Set once the other work the phase needs (a turn holding the connection) is done.
    quiet: anyio.Event = attrs.Factory(anyio.Event)


class TestCancellation:
    @pytest.mark.scenario(15)
    @pytest.mark.parametrize("phase", PHASES)
    @pytest.mark.parametrize(("anyio_backend", "how"), MECHANISMS)
    async def test_every_phase(self, served: Emulator, rule: Rule, phase, how):
        """Cancelled at any phase, a turn leaves no lock held, no retry, no leak, no trace."""
        async with contextlib.AsyncExitStack() as stack:
            turn = await self._setup(stack, served, rule, phase)
            conv = turn.conv
            requests = served.stats().requests

            await cancel_turn(how, lambda: conv.say(turn.text), turn.reached)

            await turn.quiet.wait()
            await anyio.sleep(0.1)  # time enough for an attempt that should not be made
            assert served.stats().requests == requests + turn.counted
            rule.check_pool(turn.client)
            assert [t.text for t in conv.history] == [conv.history[0].text]
            assert conv.unconfirmed == ()

            await rule.check_next_turn(conv)

            rule.check_record()
            rule.check_history(conv, unsent=[turn.text] if turn.recorded else [])
            assert [t.status for t in conv.history] == [TurnStatus.CONFIRMED] * 2
        TALLY["faults checked"] += 1

    async def _setup(  # noqa: C901, PLR0915 -- a branch per phase, read as a table
        self, stack: contextlib.AsyncExitStack, served: Emulator, rule: Rule, phase: str
    ) -> Phase:
        """A started conversation, and how to know its next turn reached `phase`."""
        text = rule.text(f"cancelled while {phase}")
        options: dict[str, object] = {"timeout": 10}
        if phase == "slot":
            options["max_connections"] = 1
        if phase == "pool":
            http = await stack.enter_async_context(
                httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1))
            )
            options["http_client"] = http
        redirect = FirstToPort()
        if phase in {"connecting", "sending"}:
            http = await stack.enter_async_context(httpx2.AsyncClient(transport=redirect))
            options["http_client"] = http
        if phase == "retry-sleep":
            stack.enter_context(stamina.set_testing(False))
        client = await stack.enter_async_context(rule.client(**options))  # type: ignore[arg-type]
        seam = client.transport
        assert isinstance(seam, CountingTransport)
        conv = client.conversation()
        await conv.say(rule.text())
        requests = served.stats().requests

        async def at_server() -> None:
            await until(lambda: served.stats().requests > requests)

        if phase in {"slot", "pool"}:
            # Another conversation's slow turn holds the only slot, or the only connection.
            served.faults.script([Fault("slow_headers", delay=0.3)])
            turn = Phase(client, conv, text, reached=at_server)

            async def hold() -> None:
                await client.conversation().say(rule.text("holding the connection"))
                turn.quiet.set()

            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(hold)
            await at_server()

            async def reached() -> None:
                # Waiting for a slot, the turn has not reached the transport; waiting for one of
                # the engine's connections, it has, but not the server.
                in_transport = 1 if phase == "slot" else 2
                await until(lambda: seam.in_flight == in_transport)
                await anyio.wait_all_tasks_blocked()
                assert seam.in_flight == in_transport
                assert served.stats().requests == requests + 1

            turn.reached = reached
            return turn
        if phase == "connecting":
            redirect.port = stack.enter_context(blackhole())

            async def connecting() -> None:
                await anyio.sleep(0.1)  # the connection can never open: it is connecting

            turn = Phase(client, conv, text, reached=connecting)
        elif phase == "sending":
            redirect.port, receiving = await stack.enter_async_context(sink())

            async def sending() -> None:
                await receiving.wait()
                await anyio.sleep(0.05)  # the body fills the socket buffers, then waits

            turn = Phase(client, conv, BIG + text, reached=sending)
        else:
            fault = {
                "headers": Fault("slow_headers", delay=5),
                "body": Fault("drip", interval=0.5),
                "retry-sleep": Fault("rate_limit", retry_after="30"),
            }[phase]
            served.faults.script([fault])

            async def answered() -> None:
                await at_server()
                await anyio.sleep(0.05)  # headers and a first chunk, or the 429, are in

            turn = Phase(
                client,
                conv,
                text,
                reached=answered,
                counted=True,
                recorded=phase in {"headers", "body"},
            )
        turn.quiet.set()
        return turn


class TestCancelledTurnAndSettling:
    @pytest.mark.scenario(15)
    async def test_a_cancelled_turn_that_landed_misleads_no_one(self, served, rule):
        """After a cancelled turn that reached the server, a later turn is never claimed landed.

        The cancelled message counts in ord_number although the conversation forgot it, so the
        next reply cannot tell what a pending turn did: it stays unconfirmed.
        """
        async with rule.client() as client:
            conv = client.conversation()
            await conv.say(rule.text())
            served.faults.script([Fault("slow_headers", delay=5)])
            with anyio.move_on_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(conv.say, cancelled := rule.text("cancelled, landed"))
                    await until(lambda: served.stats().requests == 2)
                    tg.cancel_scope.cancel()
            served.faults.script(["drop_before"])
            with pytest.raises(APIConnectionError):
                await conv.say(lost := rule.text("lost"))

            await rule.check_next_turn(conv)

            assert lost not in served.user_messages(conv.conv_id)
            assert [t.status for t in conv.history] == [
                TurnStatus.CONFIRMED,
                TurnStatus.UNCONFIRMED,
                TurnStatus.CONFIRMED,
            ]
            rule.check_history(conv, unsent=[cancelled])
            rule.check_pool(client)
