"""`RedisStore`: keys, expiring owner-token locks, and clear errors, against a real Redis."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest
import redis.asyncio

from quickchat_async import RedisStore, StoreError, StoreRecord, ValidationError

from .conftest import free_port, redis_prefix


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """redis.asyncio runs on asyncio only; TestTrio checks the error on trio."""
    return "asyncio"


@pytest.fixture(name="store")
async def _store(redis_url):
    async with RedisStore(redis_url, prefix=redis_prefix()) as store:
        yield store


@pytest.mark.anyio
class TestKeys:
    async def test_record_layout(self, store):
        """A record is a hash under '{prefix}conversation:{user_key}' with revision and data."""
        await store.save("user-1", StoreRecord("the data", "r1"), replaces=None)

        fields = await store.client.hgetall(f"{store.prefix}conversation:user-1")
        assert fields == {b"revision": b"r1", b"data": b"the data"}

    async def test_lock_expires_in_redis(self, store):
        """The lock is '{prefix}lock:{user_key}' with a Redis expiry, gone after release."""
        key = f"{store.prefix}lock:user-1"
        async with store.lock("user-1", ttl=30, timeout=5):
            assert 0 < await store.client.pttl(key) <= 30_000

        assert await store.client.exists(key) == 0

    async def test_prefixes_are_separate(self, redis_url):
        """Stores with different prefixes share neither records nor locks."""
        async with (
            RedisStore(redis_url, prefix=redis_prefix()) as one,
            RedisStore(redis_url, prefix=redis_prefix()) as two,
        ):
            await one.save("user-1", StoreRecord("one", "r1"), replaces=None)
            async with one.lock("user-1", ttl=30, timeout=5):
                with anyio.fail_after(5):
                    async with two.lock("user-1", ttl=30, timeout=1):
                        assert await two.load("user-1") is None

    async def test_callers_client(self, redis_url):
        """A caller's client, decoding or not, is used as is and left open."""
        for decode in (False, True):
            client = redis.asyncio.Redis.from_url(redis_url, decode_responses=decode)
            async with RedisStore(client=client, prefix=redis_prefix()) as store:
                await store.save("user-1", StoreRecord("ünï", "r1"), replaces=None)
                assert await store.load("user-1") == StoreRecord("ünï", "r1")
            assert await client.ping()
            await client.aclose()


@pytest.mark.anyio
class TestErrors:
    async def test_unreachable(self):
        """A Redis that cannot be reached raises StoreError, caused by redis's own error."""
        async with RedisStore(f"redis://127.0.0.1:{free_port()}/0") as store:
            with pytest.raises(StoreError, match="Redis store failed") as caught:
                await store.load("user-1")

        assert isinstance(caught.value.__cause__, redis.RedisError)

    async def test_closed(self, redis_url):
        """A closed store raises StoreError; closing twice is harmless."""
        store = RedisStore(redis_url, prefix=redis_prefix())
        await store.aclose()
        await store.aclose()

        with pytest.raises(StoreError, match="closed"):
            await store.load("user-1")


class TestConstruction:
    @pytest.mark.parametrize(
        ("args", "kwargs", "match"),
        [
            ((), {}, "url or a client"),
            (("redis://127.0.0.1",), {"client": object()}, "url or a client"),
            ((), {"client": object()}, "redis.asyncio.Redis"),
            ((42,), {}, "url must be a string"),
            (("redis://127.0.0.1",), {"prefix": 1}, "prefix"),
        ],
    )
    def test_bad_arguments(self, args, kwargs, match):
        """Exactly one of url and client, and a string prefix, are required."""
        with pytest.raises(ValidationError, match=match):
            RedisStore(*args, **kwargs)

    def test_without_redis(self, monkeypatch):
        """Without the redis package, creating a RedisStore says which extra to install."""
        monkeypatch.setitem(sys.modules, "redis", None)

        with pytest.raises(ImportError, match=r"quickchat-async\[redis\]"):
            RedisStore("redis://127.0.0.1")

    def test_sdk_does_not_import_redis(self):
        """Importing the SDK does not import redis: only creating a RedisStore does."""
        code = "import sys, quickchat_async; assert 'redis' not in sys.modules"

        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603


class TestTrio:
    def test_refused_on_trio(self):
        """On trio, a RedisStore raises a StoreError that says it needs asyncio."""

        async def use() -> None:
            async with RedisStore(f"redis://127.0.0.1:{free_port()}/0") as store:
                await store.load("user-1")

        with pytest.raises(StoreError, match="asyncio only"):
            anyio.run(use, backend="trio")
