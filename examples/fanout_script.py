"""Fan-out script: many conversations at once, with a rate limit and a summary of errors.

Runs against the emulator by default; set QUICKCHAT_API_TOKEN, QUICKCHAT_SCENARIO_ID (and
QUICKCHAT_BASE_URL if needed) to talk to a real AI Agent.

    python examples/fanout_script.py 200
"""

from __future__ import annotations

import collections
import os
import sys

import anyio

from quickchat_async import AsyncQuickchat, Conversation, Script
from quickchat_async.testing import Emulator


QUESTIONS = ["Hello!", "How do refunds work?", "How long does shipping take?"]


async def run(client: AsyncQuickchat, count: int) -> None:
    async def follow_up(conv: Conversation) -> str:
        reply = await conv.say("Do you ship abroad?")
        if "ship" in reply.text.lower():
            reply = await conv.say("How much does it cost?")
        return reply.text

    jobs = [
        Script(turns=QUESTIONS, kb_topic="billing") if n % 2 else follow_up for n in range(count)
    ]
    errors: collections.Counter[str] = collections.Counter()
    done = 0

    def progress(_result: object) -> None:
        nonlocal done
        done += 1
        if done % 50 == 0:
            print(f"{done}/{count} conversations", file=sys.stderr)

    results = await client.fan_out(jobs, concurrency=32, rate_per_second=100, on_result=progress)
    for result in results:
        if result.error is not None:
            errors[type(result.error).__name__] += 1
    print(
        f"{sum(r.ok for r in results)} of {count} conversations succeeded; errors: {dict(errors)}"
    )


async def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    if os.environ.get("QUICKCHAT_API_TOKEN"):
        async with AsyncQuickchat() as client:
            await run(client, count)
        return
    emulator = Emulator(seed=7)
    emulator.faults.set_rates({"rate_limit": 0.05, "drop_after": 0.01}, seed=7)
    async with emulator.client() as client:
        await run(client, count)


if __name__ == "__main__":
    anyio.run(main)
