"""Rate limits on the client: every attempt of every turn waits its turn, fan-outs included."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest
import trio.testing

from quickchat_async import AsyncQuickchat, Limiter, RateLimiter

from ._wire import SCENARIO_ID, TOKEN, Wire


pytestmark = pytest.mark.anyio


class Recording:
    """A limiter that lets everything through and notes each request, with a name."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def acquire(self) -> None:
        self.log.append(self.name)


@pytest.fixture(name="wire")
def _wire() -> Wire:
    return Wire()


@pytest.fixture(name="http")
async def _http(wire: Wire) -> AsyncIterator[httpx2.AsyncClient]:
    async with wire.http_client() as http:
        yield http


def gaps(wire: Wire) -> list[float]:
    times = sorted(sent.at for sent in wire.sent)
    return [later - earlier for earlier, later in itertools.pairwise(times)]


class TestAnyLimiter:
    async def test_every_attempt_waits_on_it(self, wire: Wire, http: httpx2.AsyncClient):
        """Retries wait on the limiter as first attempts do."""
        log: list[str] = []
        wire.script(*[httpx2.Response(503, headers={"Retry-After": "0"})] * 2)
        async with AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, http_client=http, rate_limiter=Recording("c", log)
        ) as client:
            await client.say("Hello")
        assert log == ["c", "c", "c"]

    async def test_a_limiter_of_ones_own_is_a_limiter(self):
        """Anything with an `async def acquire()` is a Limiter."""
        assert isinstance(Recording("x", []), Limiter)
        assert isinstance(RateLimiter(per_second=1), Limiter)

    async def test_the_fan_outs_and_the_clients_both_apply(
        self, wire: Wire, http: httpx2.AsyncClient
    ):
        """A fan-out's limiter adds to the client's: each request waits on both, its own first."""
        log: list[str] = []
        async with AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, http_client=http, rate_limiter=Recording("c", log)
        ) as client:
            results = await client.fan_out(
                [["Hi", "Bye"]] * 3, rate_limiter=Recording("f", log), concurrency=1
            )
            assert all(result.ok for result in results)
            assert client.rate_limiter is not None
            await client.say("Alone")
        assert log == ["f", "c"] * 6 + ["c"]


class TestSharing:
    @pytest.fixture(name="anyio_backend")
    def _anyio_backend(self) -> tuple[str, dict[str, object]]:
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})

    async def test_one_limiter_spaces_several_clients_and_tasks(self, wire: Wire, http):
        """Two clients, three tasks each: one limiter keeps all their requests at its rate."""
        limiter = RateLimiter(per_second=10)
        clients = [
            AsyncQuickchat(
                token=TOKEN, scenario_id=SCENARIO_ID, http_client=http, rate_limiter=limiter
            )
            for _ in range(2)
        ]

        async def chat(client: AsyncQuickchat) -> None:
            conv = client.conversation()
            for n in range(5):
                await conv.say(f"Message {n}")

        start = anyio.current_time()
        async with anyio.create_task_group() as tasks:
            for client in clients:
                for _ in range(3):
                    tasks.start_soon(chat, client)
        assert len(wire.sent) == 30
        assert min(gaps(wire)) >= 0.1 - 1e-6
        assert anyio.current_time() - start == pytest.approx(2.9, abs=0.01)
        for client in clients:
            await client.aclose()

    async def test_the_slower_of_two_limits_sets_the_pace(self, wire: Wire, http):
        """A fan-out limit above the client's rate leaves the client's in charge, and vice versa."""
        async with AsyncQuickchat(
            token=TOKEN,
            scenario_id=SCENARIO_ID,
            http_client=http,
            rate_limiter=RateLimiter(per_second=5),
        ) as client:
            await client.fan_out([["Hi"]] * 6, rate_per_second=100)
            client_paced = gaps(wire)
            wire.sent.clear()
            await client.fan_out([["Hi"]] * 6, rate_per_second=2)
            fan_out_paced = gaps(wire)
        assert client_paced == pytest.approx([0.2] * 5, abs=0.01)
        # The first of the second fan-out also waited for the client's limiter, then its own.
        assert fan_out_paced[1:] == pytest.approx([0.5] * 4, abs=0.01)
