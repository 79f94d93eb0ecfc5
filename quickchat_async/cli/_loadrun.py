"""Load runs: N conversations of M turns through the fan-out, measured turn by turn.

`run_load()` drives the SDK, through its public API only, against a Chat endpoint (by default
the emulator, served on a loopback port for the run) and returns a `LoadReport`: turns per
second, latency percentiles, errors by type and retries. The ``load`` command prints it.

Retries are counted with stamina's instrumentation hooks, which the SDK's retries go through:
for the run, a hook that counts the retries of the SDK's errors joins the hooks in place.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, Final, Literal

import anyio
import attrs
import stamina.instrumentation

from quickchat_async import (
    AsyncQuickchat,
    Conversation,
    FanOutResult,
    Limiter,
    QuickchatError,
    RateLimiter,
    RedisRateLimiter,
)
from quickchat_async.testing import Emulator


__all__ = ["MAX_CONVERSATIONS", "MAX_TURNS", "LoadPlan", "LoadReport", "TransportName", "run_load"]

#: Bounds of one run, so a typo cannot start an endless one.
MAX_CONVERSATIONS: Final = 100_000
MAX_TURNS: Final = 100
TransportName = Literal["httpx2", "httpx", "aiohttp"]


def _from_1_to(most: int) -> Callable[[Any, attrs.Attribute[int], int], None]:
    return attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(most))


@attrs.frozen(kw_only=True)
class LoadPlan:
    """What a load run sends, to which endpoint, within which bounds.

    Attributes:
        conversations: how many conversations (at most `MAX_CONVERSATIONS`).
        turns: turns per conversation (at most `MAX_TURNS`).
        concurrency: conversations in flight at once (also the connection limit).
        rate_per_second: cap on requests a second (retries included): the client's limiter.
        rate_per_minute: cap on requests a minute (retries included).
        redis_url: count the rates in this Redis (`RedisRateLimiter`, whole numbers, asyncio),
            so that several load runs, or a run and the bots sharing the token, stay under them
            together.
        rate_key: the Redis key the rates are counted under.
        transport: the HTTP engine: ``"httpx2"`` (the default), ``"httpx"`` (if installed) or
            ``"aiohttp"`` (asyncio only).
        base_url: the endpoint to load; None serves the emulator on loopback for the run.
        token: the API token for `base_url` (None: ``QUICKCHAT_API_TOKEN``).
        scenario_id: the AI Agent for `base_url` (None: ``QUICKCHAT_SCENARIO_ID``).
        timeout: seconds one attempt may take.
        max_retries: retries of each turn, as the client does them.
        max_duration: the run stops after this many seconds, reporting what it measured.

    Raises:
        ValueError: a count or a duration is out of its bounds.
    """

    conversations: int = attrs.field(default=100, validator=_from_1_to(MAX_CONVERSATIONS))
    turns: int = attrs.field(default=3, validator=_from_1_to(MAX_TURNS))
    concurrency: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    rate_per_second: float | None = None
    rate_per_minute: float | None = None
    redis_url: str | None = attrs.field(default=None, repr=False)  # it may hold a password
    rate_key: str = "quickchat-async:rate"
    transport: TransportName = "httpx2"
    base_url: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    scenario_id: str | None = None
    timeout: float = 30.0
    max_retries: int = 2
    max_duration: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class LoadReport:
    """What a load run measured.

    Attributes:
        conversations: conversations started.
        turns_per_conversation: turns each conversation was to send.
        turns_ok: turns that got their reply.
        turns_failed: turns that raised.
        conversations_failed: conversations that ended with an error.
        elapsed: seconds from the first request to the last result.
        latencies: seconds of each successful turn, sorted.
        errors: how many turns failed, by exception type.
        retries: retries that stamina scheduled after the SDK's errors.
        transport: the HTTP engine, such as ``httpx`` or ``aiohttp``.
        concurrency: conversations in flight at once.
        timed_out: the run hit its time bound before every conversation ended.
    """

    conversations: int
    turns_per_conversation: int
    turns_ok: int
    turns_failed: int
    conversations_failed: int
    elapsed: float
    latencies: tuple[float, ...] = attrs.field(repr=False)
    errors: Mapping[str, int]
    retries: int
    transport: str
    concurrency: int
    timed_out: bool = False

    @property
    def turns_per_second(self) -> float:
        """Successful turns per second of the run."""
        return self.turns_ok / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The latency at quantile `q` (0 to 1) in seconds, nearest rank; None without data."""
        if not self.latencies:
            return None
        rank = max(1, math.ceil(q * len(self.latencies)))
        return self.latencies[rank - 1]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (latencies in milliseconds)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "conversations": self.conversations,
            "turns_per_conversation": self.turns_per_conversation,
            "turns_ok": self.turns_ok,
            "turns_failed": self.turns_failed,
            "conversations_failed": self.conversations_failed,
            "elapsed_s": round(self.elapsed, 4),
            "turns_per_s": round(self.turns_per_second, 2),
            "latency_ms": {
                "p50": ms(self.percentile(0.5)),
                "p90": ms(self.percentile(0.9)),
                "p99": ms(self.percentile(0.99)),
                "max": ms(self.latencies[-1] if self.latencies else None),
            },
            "errors": dict(self.errors),
            "retries": self.retries,
            "transport": self.transport,
            "concurrency": self.concurrency,
            "timed_out": self.timed_out,
        }


@attrs.define
class _Tally:
    """What a run has measured so far: it runs each conversation's turns and times them."""

    texts: tuple[str, ...]
    latencies: list[float] = attrs.Factory(list[float])
    errors: collections.Counter[str] = attrs.Factory(collections.Counter[str])
    retries: int = 0
    conversations_failed: int = 0

    async def converse(self, conv: Conversation) -> None:
        """One conversation's turns, each timed; the first error ends it."""
        for text in self.texts:
            start = time.perf_counter()
            try:
                await conv.say(text)
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
                raise
            self.latencies.append(time.perf_counter() - start)

    def count_retry(self, details: stamina.instrumentation.RetryDetails) -> None:
        """A stamina hook: count a retry that stamina scheduled after an error of the SDK."""
        if isinstance(details.caused_by, QuickchatError):
            self.retries += 1

    def report(self, plan: LoadPlan, *, elapsed: float, timed_out: bool) -> LoadReport:
        """What the run of `plan` measured."""
        return LoadReport(
            conversations=plan.conversations,
            turns_per_conversation=plan.turns,
            turns_ok=len(self.latencies),
            turns_failed=sum(self.errors.values()),
            conversations_failed=self.conversations_failed,
            elapsed=elapsed,
            latencies=tuple(sorted(self.latencies)),
            errors=dict(self.errors.most_common()),
            retries=self.retries,
            transport=plan.transport,
            concurrency=plan.concurrency,
            timed_out=timed_out,
        )


@contextlib.contextmanager
def _retry_hook(hook: stamina.instrumentation.RetryHook) -> Generator[None]:
    """Add `hook` to stamina's retry hooks for the block, then put the previous ones back."""
    previous = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*previous, hook])
    try:
        yield
    finally:
        stamina.instrumentation.set_on_retry_hooks(previous)


@contextlib.asynccontextmanager
async def _client(plan: LoadPlan) -> AsyncGenerator[AsyncQuickchat]:
    """A client of the plan's endpoint; without one, of an emulator served for the run."""
    if plan.base_url is None:
        async with Emulator() as emulator:
            served = attrs.evolve(
                plan,
                base_url=emulator.base_url,
                token=emulator.token,
                scenario_id=emulator.scenario_id,
            )
            async with _client(served) as client:
                yield client
        return
    async with contextlib.AsyncExitStack() as stack:
        limiter = _limiter(plan)
        if isinstance(limiter, RedisRateLimiter):
            await stack.enter_async_context(limiter)
        client = await stack.enter_async_context(
            AsyncQuickchat(
                token=plan.token,
                scenario_id=plan.scenario_id,
                base_url=plan.base_url,
                transport=plan.transport,
                timeout=plan.timeout,
                max_retries=plan.max_retries,
                max_connections=plan.concurrency,
                rate_limiter=limiter,
            )
        )
        yield client


def _whole(rate: float | None) -> float | int | None:
    """A rate as RedisRateLimiter takes it: a whole number as an int (others it refuses)."""
    return int(rate) if rate is not None and rate.is_integer() else rate


def _limiter(plan: LoadPlan) -> Limiter | None:
    """The client's limiter: the plan's rates, in this process or counted in Redis."""
    if plan.rate_per_second is None and plan.rate_per_minute is None:
        return None
    if plan.redis_url is None:
        return RateLimiter(per_second=plan.rate_per_second, per_minute=plan.rate_per_minute)
    return RedisRateLimiter(
        plan.redis_url,
        per_second=_whole(plan.rate_per_second),  # type: ignore[arg-type]
        per_minute=_whole(plan.rate_per_minute),  # type: ignore[arg-type]
        key=plan.rate_key,
    )


async def run_load(
    plan: LoadPlan, *, on_result: Callable[[FanOutResult], object] | None = None
) -> LoadReport:
    """Run the plan's conversations through the fan-out and measure every turn.

    Args:
        plan: what to send, where, and within which bounds.
        on_result: called with each conversation's result (a progress bar).

    Raises:
        ValueError: the client refuses an option, such as an unknown transport or a fractional
            rate counted in Redis (the SDK's ValidationError is a ValueError).
    """
    tally = _Tally(tuple(f"Load test message {n + 1}" for n in range(plan.turns)))
    async with _client(plan) as client:
        jobs = client.fan_out_stream(
            (tally.converse for _ in range(plan.conversations)),
            concurrency=plan.concurrency,
            on_result=on_result,
        )
        start = time.perf_counter()
        with _retry_hook(tally.count_retry), anyio.move_on_after(plan.max_duration) as bound:
            async with jobs as results:
                async for result in results:
                    tally.conversations_failed += not result.ok
        elapsed = time.perf_counter() - start
    return tally.report(plan, elapsed=elapsed, timed_out=bound.cancelled_caught)
