"""RateLimiter: token buckets that space requests, per second, per minute, or both."""

from __future__ import annotations

import anyio
import pytest

import quickchat_async._ratelimit as ratelimit
from quickchat_async import RateLimiter, ValidationError


pytestmark = pytest.mark.anyio


class TestTokenBucket:
    @pytest.fixture(name="clock")
    def _clock(self, monkeypatch):
        """A fake clock: sleeping advances it, so the bucket's waits are exact."""
        clock = {"now": 100.0, "slept": []}

        async def sleep(seconds):
            clock["slept"].append(round(seconds, 6))
            clock["now"] += seconds

        monkeypatch.setattr(ratelimit.anyio, "current_time", lambda: clock["now"])
        monkeypatch.setattr(ratelimit.anyio, "sleep", sleep)
        return clock

    async def test_requests_are_spaced_evenly(self, clock):
        """With burst 1, the first goes at once and each next one 1/rate later."""
        limiter = RateLimiter(per_second=4)
        for _ in range(4):
            await limiter.acquire()

        assert clock["slept"] == [0.25, 0.25, 0.25]

    async def test_idle_time_refills_up_to_the_burst(self, clock):
        """After a quiet spell, `burst` requests go at once, then the rate resumes."""
        limiter = RateLimiter(per_minute=60, burst=3)
        for _ in range(3):
            await limiter.acquire()
        clock["now"] += 3600  # an hour idle earns no more than the burst
        for _ in range(4):
            await limiter.acquire()

        assert clock["slept"] == [1.0]

    async def test_both_limits_apply(self, clock):
        """The stricter of per-second and per-minute decides the spacing."""
        limiter = RateLimiter(per_second=10, per_minute=30)
        for _ in range(3):
            await limiter.acquire()

        assert clock["slept"] == [0.1, 1.9, 2.0]

    async def test_a_cancelled_waiter_uses_no_token(self, clock):
        """A waiter cancelled before its turn takes no token; the next one is served on time."""
        limiter = RateLimiter(per_second=1)
        await limiter.acquire()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await limiter.acquire()
        await limiter.acquire()

        assert clock["slept"] == [1.0]


class TestSettings:
    @pytest.mark.parametrize(
        "options",
        [
            {"per_second": 0},
            {"per_minute": float("inf")},
            {"per_second": True},
            {"per_second": 1, "burst": 0.5},
            {"per_second": 1, "burst": "2"},
        ],
    )
    def test_refused(self, options):
        """Rates are positive numbers; a burst below one request could never let one through."""
        with pytest.raises(ValidationError, match=r"per_second|per_minute|burst"):
            RateLimiter(**options)

    def test_repr(self):
        """The repr shows the limits."""
        assert repr(RateLimiter(per_minute=600)) == ("<RateLimiter per_second=None per_minute=600>")

    async def test_no_limit(self):
        """Without rates, acquiring never waits."""
        with anyio.fail_after(1):
            for _ in range(1000):
                await RateLimiter().acquire()
