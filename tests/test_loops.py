"""One client across event loops: one loop after another, and several at once.

A client keeps its connections per event loop, made on the loop's first request and closed as
the loop ends; a conversation and a rate limiter carry their state from loop to loop. What the
caller made (an http_client, a transport instance) serves its first loop only. The stores across
loops are in tests/stores/test_event_loops.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import httpx2
import pytest
import trio

from quickchat_async import (
    AsyncQuickchat,
    ChatRequest,
    EventLoopError,
    HTTPResponse,
    Httpx2Transport,
    RateLimiter,
)
from quickchat_async._loops import current_loop
from quickchat_async.testing import Emulator

from .conftest import SCENARIO, SCENARIO_ID, TOKEN, FakeChat
from .loops import in_threads, one_conversation, run_script


both_transports = pytest.mark.parametrize("transport", ["httpx2", "aiohttp"])


class TestOneLoopAfterAnother:
    @both_transports
    @pytest.mark.parametrize("turns", [2, 10])
    def test_asyncio_run_per_turn(self, served: Emulator, transport: str, turns: int):
        """A client made at import time serves one asyncio.run() per turn, in one conversation."""
        lines = run_script(
            """
quickchat = client()
conv = quickchat.conversation()
for n in range(int(sys.argv[3])):
    report(asyncio.run(conv.say(f"turn {n}")))
asyncio.run(quickchat.aclose())
""",
            served.base_url,
            transport,
            str(turns),
        )

        one_conversation(lines, served, turns=turns)

    @pytest.mark.parametrize("turns", [2, 10])
    def test_trio_run_per_turn(self, served: Emulator, turns: int):
        """The same with trio.run(): each run gets connections of its own."""
        lines = run_script(
            """
quickchat = client()
conv = quickchat.conversation()
for n in range(int(sys.argv[3])):
    report(trio.run(conv.say, f"turn {n}"))
trio.run(quickchat.aclose)
""",
            served.base_url,
            "httpx2",
            str(turns),
        )

        one_conversation(lines, served, turns=turns)

    def test_asyncio_and_trio_in_turn(self, served: Emulator):
        """Loops of asyncio and trio may take turns on one client and one conversation."""
        lines = run_script(
            """
quickchat = client()
conv = quickchat.conversation()
for n in range(6):
    if n % 2:
        report(trio.run(conv.say, f"turn {n}"))
    else:
        report(asyncio.run(conv.say(f"turn {n}")))
trio.run(quickchat.aclose)
""",
            served.base_url,
        )

        one_conversation(lines, served, turns=6)

    @both_transports
    def test_never_closed(self, served: Emulator, transport: str):
        """A client never closed leaves nothing open: its loops closed their connections."""
        lines = run_script(
            """
quickchat = client()
conv = quickchat.conversation()
for n in range(3):
    report(asyncio.run(conv.say(f"turn {n}")))
""",
            served.base_url,
            transport,
        )

        one_conversation(lines, served, turns=3)

    @both_transports
    def test_a_new_thread_and_loop_per_call(self, served: Emulator, transport: str):
        """As Django's async_to_sync does: each call on a new thread, with a loop closed by hand.

        The loop is shut down as asyncio's documentation asks (tasks cancelled, async generators
        finalised, then closed), as asgiref and asyncio.Runner do.
        """
        lines = run_script(
            """
def on_a_new_loop(coroutine):
    def run():
        loop = asyncio.new_event_loop()
        try:
            report(loop.run_until_complete(coroutine))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)

quickchat = client()
conv = quickchat.conversation()
for n in range(3):
    on_a_new_loop(conv.say(f"turn {n}"))
with asyncio.Runner() as runner:
    runner.run(quickchat.aclose())
""",
            served.base_url,
            transport,
        )

        one_conversation(lines, served, turns=3)

    def test_the_rate_limit_holds_across_loops(self):
        """A shared RateLimiter keeps spacing requests when the loop changes, trio's clock too."""
        limiter = RateLimiter(per_second=10)
        started = time.monotonic()

        asyncio.run(limiter.acquire())
        trio.run(limiter.acquire)
        asyncio.run(limiter.acquire())

        assert 0.19 <= time.monotonic() - started < 2

    def test_in_process_emulator_clients(self, emulator: Emulator):
        """A client of the in-process emulator makes its transport anew on each loop."""
        client = emulator.client()
        conv = client.conversation()

        replies = [asyncio.run(conv.say("turn 0")), trio.run(conv.say, "turn 1")]
        asyncio.run(client.aclose())

        assert [reply.ord_number for reply in replies] == [3, 5]
        assert emulator.user_messages(conv.conv_id or "") == ("turn 0", "turn 1")
        assert client.is_closed


# --- several loops at once ---------------------------------------------------------------------


class Gate:
    """A transport at the SDK's seam whose sends wait until another thread opens the gate."""

    def __init__(self, opened: threading.Event, entered: threading.Event) -> None:
        self.opened = opened
        self.entered = entered

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        self.entered.set()
        await anyio.to_thread.run_sync(self.opened.wait, 10)
        return HTTPResponse(200, {}, b'{"conv_id": "c-1", "reply": "Hi!", "ord_number": 3}')

    async def aclose(self) -> None:
        pass


class TestLoopsAtOnce:
    @both_transports
    def test_a_pool_per_loop(self, served: Emulator, transport: str):
        """Two threads, each with its own loop, share one client: each loop has its connections."""
        both_running = threading.Barrier(2, timeout=10)
        client = served.client(transport=transport)
        loops: list[object] = []

        async def talk(name: str) -> tuple[int | None, ...]:
            conv = client.conversation()
            first = await conv.say(f"{name} 0")
            loops.append(anyio.lowlevel.current_token().native_token)
            await anyio.to_thread.run_sync(both_running.wait)  # both loops are alive here
            return first.ord_number, (await conv.say(f"{name} 1")).ord_number

        def second() -> tuple[int | None, ...]:  # trio, where the transport runs on it
            if transport == "aiohttp":
                return asyncio.run(talk("two"))
            return trio.run(talk, "two")

        results = in_threads(lambda: asyncio.run(talk("one")), second)
        asyncio.run(client.aclose())

        assert results == [(3, 5), (3, 5)]
        assert len(set(map(id, loops))) == 2
        assert sorted(map(served.user_messages, (c.conv_id for c in served.conversations()))) == [
            ("one 0", "one 1"),
            ("two 0", "two 1"),
        ]

    def test_one_conversation_from_two_loops_at_once(self):
        """A turn from a second loop while the first loop's turn runs is refused at once."""
        opened, entered = threading.Event(), threading.Event()
        client = AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, transport=lambda: Gate(opened, entered)
        )
        conv = client.conversation()

        def second_turn() -> None:
            assert entered.wait(10)
            try:
                with pytest.raises(EventLoopError, match="another thread"):
                    trio.run(conv.say, "from the other loop")
            finally:
                opened.set()

        first, _ = in_threads(lambda: asyncio.run(conv.say("first")), second_turn)
        then = asyncio.run(conv.say("after it"))  # one after the other is fine
        asyncio.run(client.aclose())

        assert (first.text, then.text) == ("Hi!", "Hi!")
        assert [turn.text for turn in conv.history] == ["first", "after it"]

    def test_rate_limit_shared_by_threads(self):
        """Loops in two threads share one RateLimiter's rate."""
        limiter = RateLimiter(per_second=20)

        async def three() -> None:
            for _ in range(3):
                await limiter.acquire()

        started = time.monotonic()
        in_threads(lambda: asyncio.run(three()), lambda: trio.run(three))

        assert time.monotonic() - started >= 5 / 20 - 0.01


# --- what the caller made belongs to its first loop -------------------------------------------


class TestCallersOwnConnections:
    def test_http_client_serves_its_first_loop_only(self, chat: FakeChat):
        """The caller's http_client serves the loop that first sent; another is told what to do."""
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(chat))
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http)

        asyncio.run(client.say("Hello!"))
        with pytest.raises(EventLoopError, match="transport= a function") as info:
            asyncio.run(client.say("Hello again!"))
        asyncio.run(client.aclose())
        asyncio.run(http.aclose())

        assert len(chat.requests) == 1
        assert "http_client" in info.value.message

    def test_a_transport_instance_too(self, chat: FakeChat):
        """A Transport instance of the caller's is the caller's too: its first loop only."""
        made: list[str] = []

        class Counting:
            async def send(self, request: ChatRequest, /) -> HTTPResponse:
                made.append("sent")
                return HTTPResponse(200, {}, b'{"conv_id": "c-1", "reply": "Hi!"}')

            async def aclose(self) -> None:
                pass

        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport=Counting())

        asyncio.run(client.say("Hello!"))
        with pytest.raises(EventLoopError):
            trio.run(client.say, "Hello again!")

        assert made == ["sent"]

    def test_a_transport_function_serves_every_loop(self, chat: FakeChat):
        """transport= a function: the client makes a transport with it for each loop."""
        made: list[httpx2.AsyncClient] = []

        def transport() -> Httpx2Transport:
            http = httpx2.AsyncClient(transport=httpx2.MockTransport(chat))
            made.append(http)
            return Httpx2Transport(http, close_client=True)

        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport=transport)
        asyncio.run(client.say("Hello!"))
        trio.run(client.say, "Hello again!")

        assert len(chat.requests) == 2
        assert len(made) == 2
        assert all(http.is_closed for http in made)  # each closed as its loop ended
        asyncio.run(client.aclose())


# --- a loop per test, one client for all of them ------------------------------------------------


def shared_client(request: pytest.FixtureRequest) -> Iterator[tuple[AsyncQuickchat, list[object]]]:
    """One client for every test of a class, each test on a loop of its own, and those loops.

    Made and closed outside any loop, as a module-level client would be; closing runs on a loop
    of its own, after the tests' loops have ended.
    """
    if request.param == "in process":
        client = Emulator(scenarios=[SCENARIO]).client()
    else:
        served: Emulator = request.getfixturevalue("served_emulator")
        client = served.client(transport=request.param)
    loops: list[object] = []
    yield client, loops
    asyncio.run(client.aclose())
    assert client.is_closed
    assert len(set(map(id, loops))) == len(loops) >= 2  # each test its own loop


@pytest.mark.anyio
class TestALoopPerTest:
    @pytest.fixture(name="shared", scope="class", params=["in process", "httpx2"])
    @classmethod
    def _shared(
        cls, request: pytest.FixtureRequest
    ) -> Iterator[tuple[AsyncQuickchat, list[object]]]:
        yield from shared_client(request)

    async def test_first(self, shared):
        """A client made outside the test's loop talks on it."""
        client, loops = shared
        loops.append(anyio.lowlevel.current_token().native_token)
        conv = client.conversation()

        assert [(await conv.say(t)).ord_number for t in ("a", "b")] == [3, 5]

    async def test_second(self, shared):
        """The next test's loop gets fresh connections from the same client."""
        client, loops = shared
        loops.append(anyio.lowlevel.current_token().native_token)

        reply = await client.say("Hello!")

        assert reply.text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
class TestALoopPerTestOnAiohttp(TestALoopPerTest):
    """The same on aiohttp, an asyncio library."""

    @pytest.fixture(name="shared", scope="class", params=["aiohttp"])
    @classmethod
    def _shared(
        cls, request: pytest.FixtureRequest
    ) -> Iterator[tuple[AsyncQuickchat, list[object]]]:
        yield from shared_client(request)


class TestWhichLoopRuns:
    """`current_loop()` names the running loop as anyio's token does, on every kind of run."""

    def test_asyncio_is_its_running_loop(self) -> None:
        async def main() -> tuple[object, object]:
            return current_loop(), anyio.lowlevel.current_token().native_token

        found, anyio_says = asyncio.run(main())
        assert found is anyio_says
        assert isinstance(found, asyncio.AbstractEventLoop)

    def test_trio_is_its_run_token(self) -> None:
        async def main() -> tuple[object, object]:
            return current_loop(), anyio.lowlevel.current_token().native_token

        found, anyio_says = trio.run(main)
        assert found is anyio_says
        assert isinstance(found, trio.lowlevel.TrioToken)

    def test_trio_in_guest_mode_is_trio_not_its_asyncio_host(self) -> None:
        seen: list[object] = []

        async def in_trio() -> None:
            seen.append(current_loop())
            await trio.lowlevel.checkpoint()
            seen.append(current_loop())

        async def host() -> object:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            trio.lowlevel.start_guest_run(
                in_trio,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                done_callback=done.set_result,
                host_uses_signal_set_wakeup_fd=True,
            )
            (await done).unwrap()
            return loop

        host_loop = asyncio.run(host())
        assert len(seen) == 2
        assert all(isinstance(token, trio.lowlevel.TrioToken) for token in seen)
        assert seen[0] is seen[1]
        assert host_loop not in seen

    def test_anyio_run_on_asyncio_is_its_running_loop(self, monkeypatch) -> None:
        """`anyio.run()` names asyncio to sniffio: asyncio is asked, without anyio's token."""

        async def main() -> tuple[object, object]:
            return current_loop(), asyncio.get_running_loop()

        def no_token() -> object:
            raise AssertionError("anyio's token was asked")

        monkeypatch.setattr(anyio.lowlevel, "current_token", no_token)
        found, running = anyio.run(main, backend="asyncio")
        assert found is running

    def test_anyio_run_on_trio_is_its_run_token(self) -> None:
        async def main() -> object:
            return current_loop()

        assert isinstance(anyio.run(main, backend="trio"), trio.lowlevel.TrioToken)

    def test_outside_any_loop_it_says_so(self) -> None:
        with pytest.raises(anyio.NoEventLoopError):
            current_loop()
