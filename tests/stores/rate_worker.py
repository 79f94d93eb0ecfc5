"""A worker process for the shared rate limit test: N messages at once under a RedisRateLimiter.

    python rate_worker.py REDIS_URL KEY PER_SECOND COUNT NAME

The Chat endpoint and credentials come from QUICKCHAT_BASE_URL, QUICKCHAT_API_TOKEN and
QUICKCHAT_SCENARIO_ID. The worker prints `ready`, waits for a line on stdin (so that every
worker starts at once), sends COUNT messages concurrently (`NAME-0`, `NAME-1`...), each in its
own conversation, and prints `done` with how many got a reply.
"""

from __future__ import annotations

import sys

import anyio

from quickchat_async import AsyncQuickchat, RedisRateLimiter


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, key: str, per_second: int, count: int, name: str) -> None:
    async with (
        RedisRateLimiter(url, per_second=per_second, key=key) as limiter,
        AsyncQuickchat(max_retries=0, rate_limiter=limiter) as client,
    ):
        say("ready")
        await anyio.wrap_file(sys.stdin).readline()
        results = await client.fan_out([[f"{name}-{n}"] for n in range(count)], concurrency=count)
        say(f"done {sum(result.ok for result in results)}")


if __name__ == "__main__":
    url, key, per_second, count, name = sys.argv[1:6]
    anyio.run(main, url, key, int(per_second), int(count), name, backend="asyncio")
