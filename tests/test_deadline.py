"""The turn's deadline: every attempt, backoff and Retry-After wait of a turn within `deadline`.

Waits of seconds run on trio's MockClock (autojump), so they take no wall-clock time; what
happens at once is checked on asyncio and trio with the real clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
import stamina
import trio.testing

from quickchat_async import (
    APITimeoutError,
    AsyncQuickchat,
    RateLimitError,
    ServiceUnavailableError,
    TurnStatus,
)
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from ._wire import SCENARIO_ID, TOKEN, Wire, reply


pytestmark = pytest.mark.anyio


@pytest.fixture(name="wire")
def _wire() -> Wire:
    return Wire()


@pytest.fixture(name="make_client")
async def _make_client(wire: Wire) -> AsyncIterator[Callable[..., AsyncQuickchat]]:
    """Clients answered by `wire`."""
    async with wire.http_client() as http:

        def make(**options: Any) -> AsyncQuickchat:
            return AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http, **options)

        yield make


def busy(status: int, retry_after: str) -> httpx2.Response:
    return httpx2.Response(status, text="busy", headers={"Retry-After": retry_after})


class TestRetryAfterBeyondTheDeadline:
    @pytest.mark.parametrize(
        ("status", "error"), [(429, RateLimitError), (503, ServiceUnavailableError)]
    )
    async def test_raises_at_once(self, wire: Wire, make_client, status, error):
        """A Retry-After longer than the time left raises the 429/503 error without waiting."""
        wire.script(busy(status, "30"))
        start = anyio.current_time()
        async with make_client(deadline=10) as client:
            with pytest.raises(error) as info:
                await client.say("Hello")
        assert anyio.current_time() - start < 1
        assert info.value.retry_after == 30
        assert len(wire.sent) == 1

    async def test_a_per_call_deadline_applies_too(self, wire: Wire, make_client):
        """The per-call deadline is the one compared with Retry-After, not the client's."""
        wire.script(busy(503, "5"))
        async with make_client(max_retries=0) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.say("Hello", deadline=2, max_retries=3)
        assert len(wire.sent) == 1


@pytest.fixture(name="real_waits")
def _real_waits() -> Iterator[None]:
    """Backoff and Retry-After waits as in production (on the mock clock, they cost nothing)."""
    with stamina.set_testing(False):
        yield


class TestOnTheEventLoopsClock:
    @pytest.fixture(name="anyio_backend")
    def _anyio_backend(self) -> tuple[str, dict[str, object]]:
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})

    async def test_retry_after_waits_count_against_it(self, wire: Wire, make_client, real_waits):
        """Retry-After waits are taken while they fit; the one that no longer fits raises."""
        wire.script(*[busy(503, "1")] * 10)
        start = anyio.current_time()
        async with make_client(max_retries=10) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.say("Hello", deadline=2.5)
        assert [round(sent.at - start, 3) for sent in wire.sent] == [0, 1, 2]
        assert anyio.current_time() - start == pytest.approx(2, abs=0.01)

    async def test_each_attempt_ends_by_the_deadline(self, wire: Wire, make_client, real_waits):
        """An attempt's own timeout is cut to the time the turn has left."""
        wire.script(busy(503, "1"))
        async with make_client() as client:
            await client.say("Hello", deadline=2.5)
        first, second = (sent.timeout["read"] for sent in wire.sent)
        assert first == pytest.approx(2.5, abs=0.01)
        assert second == pytest.approx(1.5, abs=0.01)

    async def test_a_slow_reply_reaches_it_with_an_unknown_outcome(self):
        """A reply later than the deadline: APITimeoutError, the message may have landed."""
        emulator = Emulator()
        async with emulator.client(timeout=30) as client:
            conv = client.conversation()
            emulator.faults.script([Fault("slow_headers", delay=60)])
            start = anyio.current_time()
            with pytest.raises(APITimeoutError, match="deadline of 2 s") as info:
                await conv.say("Hello", deadline=2)
        assert anyio.current_time() - start == pytest.approx(2, abs=0.01)
        assert info.value.outcome_unknown
        assert conv.history[-1].status is TurnStatus.UNCONFIRMED
        (recorded,) = emulator.conversations()
        assert emulator.user_messages(recorded.conv_id) == ("Hello",)

    async def test_backoff_counts_against_it(self, wire: Wire, make_client, real_waits):
        """Backoff between unsent attempts ends at the deadline: the message was not sent."""
        wire.script(*[httpx2.ConnectError("refused")] * 50)
        start = anyio.current_time()
        async with make_client(max_retries=50) as client:
            with pytest.raises(APITimeoutError) as info:
                await client.say("Hello", deadline=3)
        assert anyio.current_time() - start == pytest.approx(3, abs=0.01)
        assert not info.value.outcome_unknown
        assert 2 <= len(wire.sent) < 10

    async def test_an_earlier_ambiguous_attempt_is_remembered(
        self, wire: Wire, make_client, real_waits
    ):
        """After an attempt that may have landed, a deadline reached later still says so."""
        wire.script(httpx2.ReadError("dropped"), *[httpx2.ConnectError("refused")] * 50)
        async with make_client(max_retries=50, retry_ambiguous=True) as client:
            with pytest.raises(APITimeoutError) as info:
                await client.say("Hello", deadline=3)
        assert info.value.outcome_unknown
        assert len(wire.sent) >= 2

    async def test_the_clients_deadline_is_the_default(self):
        """A client-level deadline bounds every turn; deadline=None lifts it for one turn."""
        emulator = Emulator()
        async with emulator.client(deadline=1, timeout=30) as client:
            emulator.faults.script([Fault("slow_headers", delay=5), Fault("slow_headers", delay=5)])
            with pytest.raises(APITimeoutError, match="deadline of 1 s"):
                await client.say("Hello")
            start = anyio.current_time()
            late = await client.say("Hello", deadline=None)
        assert anyio.current_time() - start == pytest.approx(5, abs=0.01)
        assert late.text

    async def test_a_turn_within_it_is_untouched(self, wire: Wire, make_client, real_waits):
        """A turn that ends in time returns its reply, its waits included."""
        wire.script(busy(429, "1"), reply(conv_id="c-9"))
        async with make_client(deadline=5) as client:
            answer = await client.say("Hello")
        assert answer.conv_id == "c-9"
        assert answer.attempts == 2
