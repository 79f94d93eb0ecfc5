"""Load runs: N conversations of M turns through the fan-out, measured turn by turn.

`run_load()` drives the SDK against a Chat endpoint (by default the emulator, served on a
loopback port for the run) and returns a `LoadReport`: turns per second, latency percentiles,
errors by type and retries. The ``quickchat-async load`` command prints it.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import anyio
import attrs

from ._client import AsyncQuickchat
from ._config import SDK_USER_AGENT, Timeout
from ._conversation import Conversation
from ._fanout import FanOutResult
from ._models import HTTPResponse
from ._transports import BaseTransport, Transport, resolve_transport
from ._wire import ChatRequest


__all__ = ["MAX_CONVERSATIONS", "MAX_TURNS", "LoadReport", "run_load"]

#: Bounds of one run, so a typo cannot start an endless one.
MAX_CONVERSATIONS: Final = 100_000
MAX_TURNS: Final = 100
TransportName = Literal["httpx2", "httpx", "aiohttp"]


class _CountingTransport(BaseTransport):
    """Counts attempts on the way through, to tell retries from first attempts."""

    __slots__ = ("attempts", "inner", "user_agent")

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.attempts = 0
        # The User-Agent names the inner engine.
        self.user_agent = inner.user_agent if isinstance(inner, BaseTransport) else SDK_USER_AGENT

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        self.attempts += 1
        return await self.inner.send(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


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
        retries: attempts beyond each turn's first.
        transport: ``httpx`` or ``aiohttp``.
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


def _check_bounds(conversations: int, turns: int, concurrency: int, max_duration: float) -> None:
    if not 1 <= conversations <= MAX_CONVERSATIONS:
        raise ValueError(f"conversations must be between 1 and {MAX_CONVERSATIONS}.")
    if not 1 <= turns <= MAX_TURNS:
        raise ValueError(f"turns must be between 1 and {MAX_TURNS}.")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1.")
    if not max_duration > 0:
        raise ValueError("max_duration must be a positive number of seconds.")


async def run_load(
    *,
    conversations: int = 100,
    turns: int = 3,
    concurrency: int = 32,
    rate_per_second: float | None = None,
    rate_per_minute: float | None = None,
    transport: TransportName = "httpx2",
    base_url: str | None = None,
    token: str | None = None,
    scenario_id: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 -- the per-attempt timeout of the client
    max_retries: int = 2,
    max_duration: float = 300.0,
    on_result: Callable[[FanOutResult], object] | None = None,
) -> LoadReport:
    """Run `conversations` x `turns` through the fan-out and measure every turn.

    Without `base_url`, the emulator is served on a free loopback port for the run and its
    demo credentials are used. With one, `token` and `scenario_id` (or ``QUICKCHAT_*``
    variables) say whom to talk to.

    Args:
        conversations: how many conversations (at most `MAX_CONVERSATIONS`).
        turns: turns per conversation (at most `MAX_TURNS`).
        concurrency: conversations in flight at once (also the connection limit).
        rate_per_second: cap on requests a second (retries included).
        rate_per_minute: cap on requests a minute (retries included).
        transport: ``"httpx"`` or ``"aiohttp"`` (asyncio only).
        base_url: the endpoint to load; None serves the emulator on loopback.
        token: the API token for `base_url`.
        scenario_id: the AI Agent for `base_url`.
        timeout: seconds one attempt may take.
        max_retries: retries of each turn, as the client does them.
        max_duration: the run stops after this many seconds, reporting what it measured.
        on_result: called with each conversation's result (a progress bar).

    Raises:
        ValueError: a bound is out of range, or an unknown transport.
    """
    _check_bounds(conversations, turns, concurrency, max_duration)
    if base_url is None:
        from .testing import Emulator  # noqa: PLC0415 -- the [emulator] extra, only when used

        async with Emulator() as emulator:
            return await run_load(
                conversations=conversations,
                turns=turns,
                concurrency=concurrency,
                rate_per_second=rate_per_second,
                rate_per_minute=rate_per_minute,
                transport=transport,
                base_url=emulator.base_url,
                token=emulator.token,
                scenario_id=emulator.scenario_id,
                timeout=timeout,
                max_retries=max_retries,
                max_duration=max_duration,
                on_result=on_result,
            )
    counting = _CountingTransport(resolve_transport(transport, None, concurrency))
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    texts = [f"Load test message {n + 1}" for n in range(turns)]

    async def conversation(conv: Conversation) -> None:
        for text in texts:
            start = time.perf_counter()
            try:
                await conv.say(text)
            except Exception as exc:
                errors[type(exc).__name__] += 1
                raise
            latencies.append(time.perf_counter() - start)

    failed = 0
    client = AsyncQuickchat(
        token=token,
        scenario_id=scenario_id,
        base_url=base_url,
        transport=counting,
        timeout=Timeout.of(timeout),
        max_retries=max_retries,
        max_connections=concurrency,
    )
    start = time.perf_counter()
    async with client:
        with anyio.move_on_after(max_duration) as bound:
            async with client.fan_out_stream(
                (conversation for _ in range(conversations)),
                concurrency=concurrency,
                rate_per_second=rate_per_second,
                rate_per_minute=rate_per_minute,
                on_result=on_result,
            ) as results:
                async for result in results:
                    failed += not result.ok
    elapsed = time.perf_counter() - start
    latencies.sort()
    turns_failed = sum(errors.values())
    return LoadReport(
        conversations=conversations,
        turns_per_conversation=turns,
        turns_ok=len(latencies),
        turns_failed=turns_failed,
        conversations_failed=failed,
        elapsed=elapsed,
        latencies=tuple(latencies),
        errors=dict(errors.most_common()),
        retries=max(0, counting.attempts - len(latencies) - turns_failed),
        transport=transport,
        concurrency=concurrency,
        timed_out=bound.cancelled_caught,
    )
