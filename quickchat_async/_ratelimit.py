"""Rate limits: what a limiter is (`Limiter`), and `RateLimiter`, token buckets in one process.

Quickchat limits requests per token. Every attempt of every turn waits on the client's limiter,
if it has one, and on a fan-out's own, if that has one (`all_of`). A limiter shared by a fleet
of processes lives in `_redis_limiter`.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import anyio

from ._exceptions import ValidationError
from ._validation import check_rate


__all__ = ["Limiter", "RateLimiter", "all_of", "check_limiter"]


@runtime_checkable
class Limiter(Protocol):
    """Anything a request can wait on for its turn: `RateLimiter`, `RedisRateLimiter`, yours."""

    async def acquire(self) -> None:
        """Wait until one more request fits under the limit, and count it."""
        ...


class _Bucket:
    """One token bucket: `rate` tokens a second, holding at most `burst`; waiters queue FIFO."""

    __slots__ = ("_burst", "_lock", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated: float | None = None
        self._lock: anyio.Lock | None = None

    def _refill(self, now: float) -> None:
        if self._updated is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # FIFO: the first to wait is the first served
            self._refill(anyio.current_time())
            if self._tokens < 1:
                await anyio.sleep((1 - self._tokens) / self._rate)
                self._refill(anyio.current_time())
            self._tokens -= 1


class RateLimiter:
    """Spaces requests to stay under a rate: per second, per minute, or both.

    Each limit is a token bucket. With the default `burst` of 1, requests are spread evenly
    (one every 1/rate seconds), so no window of any length ever sees more than the limit. A
    larger burst lets that many go at once after a quiet spell. Waiters are served in order;
    one cancelled while waiting uses no token.

    Args:
        per_second: at most this many requests a second (None: no limit).
        per_minute: at most this many requests a minute (None: no limit).
        burst: how many requests may go at once after an idle period.

    Raises:
        ValidationError: a rate that is not a positive number, or a burst below 1.

    Example::

        limiter = RateLimiter(per_minute=600)
        await limiter.acquire()  # waits for its turn
    """

    __slots__ = ("_buckets", "per_minute", "per_second")

    def __init__(
        self,
        *,
        per_second: float | None = None,
        per_minute: float | None = None,
        burst: float = 1,
    ) -> None:
        check_rate(per_second, name="per_second")
        check_rate(per_minute, name="per_minute")
        try:
            enough = (check_rate(burst, name="burst") or 0) >= 1
        except ValidationError:
            enough = False
        if not enough:
            raise ValidationError(f"burst must be a number of at least 1, not {burst!r}.")
        self.per_second = per_second
        self.per_minute = per_minute
        self._buckets = tuple(
            _Bucket(rate, burst)
            for rate in (per_second, None if per_minute is None else per_minute / 60)
            if rate is not None
        )

    def __repr__(self) -> str:
        return f"<RateLimiter per_second={self.per_second!r} per_minute={self.per_minute!r}>"

    async def acquire(self) -> None:
        """Wait until one more request fits under every limit, and count it."""
        for bucket in self._buckets:
            await bucket.acquire()


class _AllOf:
    """Several limiters that all apply: a request waits on each in turn."""

    __slots__ = ("limiters",)

    def __init__(self, limiters: tuple[Limiter, ...]) -> None:
        self.limiters = limiters

    def __repr__(self) -> str:
        return f"<all of {', '.join(map(repr, self.limiters))}>"

    async def acquire(self) -> None:
        for limiter in self.limiters:
            await limiter.acquire()


def all_of(*limiters: Limiter | None) -> Limiter | None:
    """One limiter that waits on each of `limiters` in order (None ones left out).

    Put the narrowest first: a request holding a token of a shared limiter should not then
    wait on a local one, keeping the shared token from the rest of the fleet.
    """
    given = tuple(limiter for limiter in limiters if limiter is not None)
    if len(given) <= 1:
        return given[0] if given else None
    return _AllOf(given)


def check_limiter(rate_limiter: object, *, name: str = "rate_limiter") -> Limiter | None:
    """A limiter (an object with ``async def acquire()``), or None.

    Raises:
        ValidationError: anything else.
    """
    if rate_limiter is None:
        return None
    acquire = getattr(rate_limiter, "acquire", None)
    if not isinstance(rate_limiter, Limiter) or not inspect.iscoroutinefunction(acquire):
        raise ValidationError(
            f"{name} must be a RateLimiter, a RedisRateLimiter, an object with an "
            f"`async def acquire()`, or None; not {type(rate_limiter).__name__}."
        )
    return rate_limiter
