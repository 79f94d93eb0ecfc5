"""What stamina's retry context costs an attempt that succeeds at once (`_attempts.py` cites it).

    python benchmarks/retry_context_cost.py [--attempts 20000]

Times, on asyncio, an attempt that returns at once made plainly (as the SDK makes a turn's first
attempt) and made inside `stamina.retry_context` with the SDK's retry settings (as every attempt
would be if the first went through stamina too); best of five runs of 20,000 attempts each.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import stamina

from quickchat_async._wire import BACKOFF


async def attempt() -> int:
    return 1


def never(_: Exception) -> bool:
    return False


async def plain(count: int) -> None:
    for _ in range(count):
        await attempt()


async def in_retry_context(count: int) -> None:
    for _ in range(count):
        async for retry in stamina.retry_context(on=never, attempts=3, timeout=None, **BACKOFF):
            with retry:
                await attempt()


def best_of_five(run: Callable[[int], Coroutine[Any, Any, None]], attempts: int) -> float:
    """Microseconds an attempt, the best of five runs of `attempts` attempts."""
    best = min(_timed(run, attempts) for _ in range(5))
    return best / attempts * 1e6


def _timed(run: Callable[[int], Coroutine[Any, Any, None]], attempts: int) -> float:
    start = time.perf_counter()
    asyncio.run(run(attempts))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20_000, help="attempts a run")
    attempts = parser.parse_args().attempts
    outside = best_of_five(plain, attempts)
    inside = best_of_five(in_retry_context, attempts)
    print(f"an attempt outside a retry context: {outside:.2f} µs")
    more = inside - outside
    print(f"an attempt inside stamina.retry_context: {inside:.2f} µs ({more:.1f} µs more)")


if __name__ == "__main__":
    main()
