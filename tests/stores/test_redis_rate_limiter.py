"""RedisRateLimiter: one request rate for every process that shares a token, counted in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quickchat_async import (
    AsyncQuickchat,
    RedisRateLimiter,
    RedisStore,
    StoreError,
    ValidationError,
)
from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO_ID, TOKEN

from .conftest import free_port, redis_prefix


WORKER = Path(__file__).with_name("rate_worker.py")
ROOT = Path(__file__).parents[2]
#: The longest a worker may take, on a busy machine.
WORKER_TIMEOUT = 60.0

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def busiest_window(times: list[float], width: float) -> int:
    """The most of `times` that fall in any window of `width` seconds."""
    times = sorted(times)
    return max(
        sum(1 for later in times[i:] if later - start < width) for i, start in enumerate(times)
    )


class TestAcrossProcesses:
    @pytest.mark.network
    @pytest.mark.slow
    def test_workers_together_stay_under_the_rate(self, redis_url: str, served: Emulator):
        """Two worker processes sending at once: together, at most `per_second` a second."""
        per_second, count = 5, 6
        key = f"{redis_prefix()}rate"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "QUICKCHAT_BASE_URL": served.base_url,
            "QUICKCHAT_API_TOKEN": TOKEN,
            "QUICKCHAT_SCENARIO_ID": SCENARIO_ID,
        }
        workers = [
            subprocess.Popen(  # noqa: S603 -- our own script and arguments
                [sys.executable, str(WORKER), redis_url, key, str(per_second), str(count), name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name in ("a", "b")
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready"
            outputs = [worker.communicate("go\n", timeout=WORKER_TIMEOUT) for worker in workers]
        finally:
            for worker in workers:
                worker.kill()
                worker.wait(timeout=10)
        for (out, err), worker in zip(outputs, workers, strict=True):
            assert worker.returncode == 0, err
            assert out.split() == ["done", str(count)]
        arrived = [
            message.time.timestamp()
            for conv in served.service.conversations()
            for message in conv.messages
            if message.role.value == "user"
        ]
        assert len(arrived) == 2 * count
        # The window is checked a little narrower than a second: a request counted at the
        # end of one second may reach the server a few milliseconds later than its neighbour.
        assert busiest_window(arrived, 0.95) <= per_second
        assert max(arrived) - min(arrived) >= (2 * count - 1) // per_second - 0.1


class TestOneProcess:
    @asyncio_only
    @pytest.mark.anyio
    async def test_it_spaces_a_client_s_requests(self, redis_url: str):
        """A client with a RedisRateLimiter sends at most per_second requests in a second."""
        emulator = Emulator()
        limiter = RedisRateLimiter(redis_url, per_second=3, key=f"{redis_prefix()}rate")
        async with limiter, emulator.client(rate_limiter=limiter) as client:
            await client.fan_out([["Hi"]] * 5, concurrency=5)
        arrived = [
            m.time.timestamp()
            for c in emulator.conversations()
            for m in c.messages
            if m.ord_number == 2
        ]
        assert len(arrived) == 5
        assert busiest_window(arrived, 0.95) <= 3

    @asyncio_only
    @pytest.mark.anyio
    async def test_it_can_share_a_stores_client(self, redis_url: str):
        """Given a RedisStore's client, it counts through it and leaves it open."""
        async with RedisStore(redis_url, prefix=redis_prefix()) as store:
            limiter = RedisRateLimiter(
                client=store.client, per_minute=100, key=f"{redis_prefix()}r"
            )
            await limiter.acquire()
            await limiter.aclose()
            assert await store.client.ping()

    @asyncio_only
    @pytest.mark.anyio
    async def test_a_missing_redis_is_a_store_error(self):
        """A Redis that cannot be reached fails the attempt with a StoreError; nothing is sent."""
        emulator = Emulator()
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", per_second=1)
        async with limiter, emulator.client(rate_limiter=limiter) as client:
            with pytest.raises(StoreError, match="Redis rate limiter failed"):
                await client.say("Hello")
        assert emulator.stats().requests == 0

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_trio_is_refused_clearly(self):
        """On trio (redis.asyncio is asyncio's), acquire() says so with a StoreError."""
        async with RedisRateLimiter("redis://127.0.0.1:1/0", per_second=1) as limiter:
            with pytest.raises(StoreError, match="asyncio only"):
                await limiter.acquire()


class TestArguments:
    @pytest.mark.parametrize(
        ("arguments", "named"),
        [
            ({"per_second": 1.5}, "per_second"),
            ({"per_second": 0}, "per_second"),
            ({"per_minute": True}, "per_minute"),
            ({"per_minute": "60"}, "per_minute"),
            ({}, "per_second=, per_minute="),
            ({"per_second": 1, "key": ""}, "key"),
            ({"per_second": 1, "client": "redis"}, "url or a client"),
        ],
    )
    def test_a_bad_argument_is_named(self, arguments, named):
        """Bad rates, keys or connections are ValidationErrors that name them."""
        with pytest.raises(ValidationError, match=named):
            RedisRateLimiter("redis://127.0.0.1:1/0", **arguments)

    def test_a_client_that_is_not_redis_is_refused(self):
        """client= must be a redis.asyncio.Redis."""
        with pytest.raises(ValidationError, match="client must be"):
            RedisRateLimiter(client=object(), per_second=1)  # type: ignore[arg-type]

    def test_its_repr_shows_no_url(self):
        """The repr names the key and rates, never the URL (which may hold a password)."""
        limiter = RedisRateLimiter("redis://:s3cret@127.0.0.1:1/0", per_minute=60, key="k")
        assert repr(limiter) == "<RedisRateLimiter key='k' per_second=None per_minute=60>"

    def test_it_is_accepted_by_the_client(self):
        """A client takes it as its rate_limiter."""
        limiter = RedisRateLimiter("redis://127.0.0.1:1/0", per_second=1)
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, rate_limiter=limiter)
        assert client.rate_limiter is limiter


class TestTheLoadCommand:
    @pytest.mark.network
    def test_it_counts_its_rate_in_redis(self, redis_url: str):
        """`load --redis-url` paces its requests by a count kept in Redis, under --rate-key."""
        import redis  # noqa: PLC0415 -- the [redis] extra
        from typer.testing import CliRunner  # noqa: PLC0415 -- the [cli] extra

        from quickchat_async import cli  # noqa: PLC0415

        key = f"{redis_prefix()}load"
        arguments = ["load", "-n", "6", "-m", "1", "--rate", "3", "--redis-url", redis_url]
        result = CliRunner().invoke(cli.app, [*arguments, "--rate-key", key, "--json"])

        assert result.exit_code == 0, result.output
        run = json.loads(result.stdout[result.stdout.index("{") :])
        assert run["turns_ok"] == 6
        assert run["elapsed_s"] >= 0.9  # three at once, then three a second later
        with redis.Redis.from_url(redis_url) as direct:
            assert direct.keys(f"*{key}*")
