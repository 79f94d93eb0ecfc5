"""Stores across event loops: one loop after another, and several at once.

A store's per-loop parts (the user keys' locks, SQLite's worker-thread limiter, a Redis client
made from a URL) are made on each loop; what keeps turns of one user apart across loops in
several threads is the store's lease, as across processes.
"""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import pytest
import trio

from quickchat_async import EventLoopError, MemoryStore, RedisStore, SQLiteStore
from quickchat_async.testing import Emulator
from tests.loops import in_threads, one_conversation, run_script


class TestOneLoopAfterAnother:
    def test_stored_conversations(self, served: Emulator, tmp_path):
        """An SQLiteStore and the conversations in it carry on across asyncio and trio loops."""
        lines = run_script(
            """
quickchat = client()
store = SQLiteStore(sys.argv[3])

async def turn(n):
    stored = await quickchat.conversation_for("user-1", store=store)
    return await stored.say(f"turn {n}")

for n in range(4):
    report(trio.run(turn, n) if n % 2 else asyncio.run(turn(n)))
asyncio.run(store.aclose())
asyncio.run(quickchat.aclose())
""",
            served.base_url,
            "httpx2",
            str(tmp_path / "bot.db"),
        )

        one_conversation(lines, served, turns=4)

    def test_redis_store(self, served: Emulator, redis_url: str):
        """A RedisStore made from a URL makes a Redis client per loop and closes each as it ends."""
        lines = run_script(
            """
quickchat = client()
store = RedisStore(sys.argv[3], prefix=sys.argv[4])

async def turn(n):
    stored = await quickchat.conversation_for("user-1", store=store)
    return await stored.say(f"turn {n}")

for n in range(3):
    report(asyncio.run(turn(n)))
asyncio.run(store.aclose())
asyncio.run(quickchat.aclose())
""",
            served.base_url,
            "httpx2",
            redis_url,
            f"loops-{time.monotonic_ns()}:",
        )

        one_conversation(lines, served, turns=3)


class TestLoopsAtOnce:
    @pytest.mark.parametrize("make_store", [MemoryStore, "sqlite"])
    def test_one_user_from_two_threads(self, emulator: Emulator, tmp_path, make_store):
        """Turns of one user key from loops in two threads go one at a time: one conversation."""
        store = SQLiteStore(tmp_path / "bot.db") if make_store == "sqlite" else MemoryStore()
        client = emulator.client()
        start = threading.Barrier(2, timeout=10)

        async def turns(name: str) -> None:
            await anyio.to_thread.run_sync(start.wait)
            for n in range(3):
                stored = await client.conversation_for("user-1", store=store)
                await stored.say(f"{name} {n}")

        in_threads(lambda: asyncio.run(turns("one")), lambda: trio.run(turns, "two"))
        asyncio.run(store.aclose())
        asyncio.run(client.aclose())

        (conversation,) = emulator.conversations()
        assert sorted(emulator.user_messages(conversation.conv_id)) == sorted(
            f"{name} {n}" for name in ("one", "two") for n in range(3)
        )


class TestCallersRedisClient:
    def test_serves_its_first_loop_only(self, redis_url: str):
        """A RedisStore on the caller's Redis client serves that client's first loop only."""
        from redis.asyncio import Redis  # noqa: PLC0415 -- imported where a Redis is served

        redis = Redis.from_url(redis_url)
        store = RedisStore(client=redis, prefix=f"loops-{time.monotonic_ns()}:")

        async def load_and_close_the_client() -> None:
            assert await store.load("user-1") is None
            await redis.aclose()  # the caller's to close, on its loop

        async def load_elsewhere() -> None:
            with pytest.raises(EventLoopError, match="URL"):
                await store.load("user-1")
            await store.aclose()

        asyncio.run(load_and_close_the_client())
        asyncio.run(load_elsewhere())
