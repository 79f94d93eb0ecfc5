"""The `ConversationStore` contract, run against MemoryStore, SQLiteStore and RedisStore."""

from __future__ import annotations

import anyio
import pytest

from quickchat_async import (
    ConversationStore,
    QuickchatError,
    StoreConflictError,
    StoreError,
    StoreLockTimeoutError,
    StoreRecord,
    ValidationError,
)

from .conftest import SHARED_STORE_KINDS, STORE_KINDS


def every_store(cls: type) -> type:
    """Run an async test class on both backends against every store."""
    return pytest.mark.anyio(
        pytest.mark.parametrize("store_factory", STORE_KINDS, indirect=True)(cls)
    )


def shared_stores(cls: type) -> type:
    """Run an async test class on both backends against the stores processes share."""
    return pytest.mark.anyio(
        pytest.mark.parametrize("store_factory", SHARED_STORE_KINDS, indirect=True)(cls)
    )


class TestStoreRecord:
    def test_repr_has_no_data(self):
        """A record's repr shows its revision and size, never its content."""
        record = StoreRecord(data='{"text": "my secret question"}', revision="abc")

        assert "secret" not in repr(record)
        assert "abc" in repr(record)


@every_store
class TestRecords:
    async def test_is_a_store(self, store):
        """Each store satisfies the ConversationStore protocol."""
        assert isinstance(store, ConversationStore)

    async def test_missing(self, store):
        """A user key without a record loads as None."""
        assert await store.load("nobody") is None

    async def test_round_trip(self, store):
        """A saved record loads back verbatim, with its revision."""
        record = StoreRecord(data='{"x": "héllo ✓"}', revision="r1")
        await store.save("user-1", record, replaces=None)

        assert await store.load("user-1") == record

    async def test_replace_current(self, store):
        """Saving over the stored revision replaces the record."""
        await store.save("user-1", StoreRecord("one", "r1"), replaces=None)
        await store.save("user-1", StoreRecord("two", "r2"), replaces="r1")

        assert await store.load("user-1") == StoreRecord("two", "r2")

    async def test_new_over_existing(self, store):
        """Saving a new record where one exists raises StoreConflictError and keeps the old one."""
        await store.save("user-1", StoreRecord("one", "r1"), replaces=None)

        with pytest.raises(StoreConflictError, match="user-1"):
            await store.save("user-1", StoreRecord("two", "r2"), replaces=None)
        assert await store.load("user-1") == StoreRecord("one", "r1")

    async def test_stale_revision(self, store):
        """Saving over a revision that is no longer stored raises StoreConflictError."""
        await store.save("user-1", StoreRecord("one", "r1"), replaces=None)
        await store.save("user-1", StoreRecord("two", "r2"), replaces="r1")

        with pytest.raises(StoreConflictError):
            await store.save("user-1", StoreRecord("three", "r3"), replaces="r1")
        assert await store.load("user-1") == StoreRecord("two", "r2")

    async def test_replace_missing(self, store):
        """Saving over a revision when nothing is stored raises StoreConflictError."""
        with pytest.raises(StoreConflictError):
            await store.save("user-1", StoreRecord("one", "r1"), replaces="r0")
        assert await store.load("user-1") is None

    async def test_delete(self, store):
        """Deleting removes the record, and deleting a missing one is harmless."""
        await store.save("user-1", StoreRecord("one", "r1"), replaces=None)
        await store.delete("user-1")
        await store.delete("user-1")

        assert await store.load("user-1") is None

    async def test_keys_are_separate(self, store):
        """Each user key has its own record; keys may be any text."""
        keys = ["telegram:42", "telegram:420", "ünï cødé 🙂", "a" * 512, "with space/and:colon"]
        for index, key in enumerate(keys):
            await store.save(key, StoreRecord(f"data {index}", f"r{index}"), replaces=None)

        for index, key in enumerate(keys):
            assert await store.load(key) == StoreRecord(f"data {index}", f"r{index}")

    @pytest.mark.parametrize("user_key", ["", "x" * 513, "\ud800", None, 42])
    async def test_bad_user_key(self, store, user_key):
        """A user key that is not a non-empty, bounded string is refused before the backend."""
        with pytest.raises(ValidationError, match="user_key"):
            await store.load(user_key)
        with pytest.raises(ValidationError, match="user_key"):
            await store.save(user_key, StoreRecord("x", "r"), replaces=None)
        with pytest.raises(ValidationError, match="user_key"):
            store.lock(user_key, ttl=1, timeout=1)


@every_store
class TestLock:
    async def test_serialises_tasks(self, store):
        """Tasks holding one user key take turns, in arrival order, never overlapping."""
        inside: list[int] = []
        order: list[int] = []

        async def turn(number: int) -> None:
            async with store.lock("user-1", ttl=10, timeout=10):
                inside.append(number)
                assert len(inside) == 1
                order.append(number)
                await anyio.sleep(0.02)
                inside.remove(number)

        async with anyio.create_task_group() as tasks:
            for number in range(5):
                tasks.start_soon(turn, number)
                await anyio.sleep(0.001)  # arrive in order

        assert order == [0, 1, 2, 3, 4]

    async def test_keys_do_not_block_each_other(self, store):
        """Holding one user key does not delay another."""
        async with store.lock("user-1", ttl=10, timeout=10):
            with anyio.fail_after(5):
                async with store.lock("user-2", ttl=10, timeout=1):
                    pass

    async def test_timeout(self, store):
        """Waiting longer than the timeout raises StoreLockTimeoutError, a TimeoutError."""
        caught: list[BaseException] = []

        async def wait() -> None:
            try:
                async with store.lock("user-1", ttl=10, timeout=0.2):
                    pytest.fail("the lock was held twice")
            except StoreLockTimeoutError as exc:
                caught.append(exc)

        async with store.lock("user-1", ttl=10, timeout=10), anyio.create_task_group() as tasks:
            tasks.start_soon(wait)

        assert len(caught) == 1
        assert "user-1" in str(caught[0])
        assert isinstance(caught[0], TimeoutError)
        assert isinstance(caught[0], QuickchatError)

    async def test_nested_in_one_task(self, store):
        """A task asking again for a user key it holds gets a clear error, not a deadlock."""
        async with store.lock("user-1", ttl=10, timeout=10):
            with pytest.raises(StoreError, match="already holds"):
                async with store.lock("user-1", ttl=10, timeout=10):
                    pytest.fail("the lock was held twice")

    async def test_error_propagates_unwrapped(self, store):
        """An error inside the lock propagates as is, and the lock is free again."""
        with pytest.raises(KeyError):
            async with store.lock("user-1", ttl=10, timeout=10):
                raise KeyError("boom")

        with anyio.fail_after(5):
            async with store.lock("user-1", ttl=10, timeout=1):
                pass

    async def test_released_on_cancel(self, store):
        """A cancelled holder releases the lock."""
        with anyio.move_on_after(0.1):
            async with store.lock("user-1", ttl=10, timeout=10):
                await anyio.sleep_forever()

        with anyio.fail_after(5):
            async with store.lock("user-1", ttl=10, timeout=1):
                pass

    async def test_cancelled_waiter(self, store):
        """A waiter cancelled while queued leaves the lock usable."""

        async def wait() -> None:
            with anyio.move_on_after(0.1):
                async with store.lock("user-1", ttl=10, timeout=10):
                    pytest.fail("the lock was held twice")

        async with store.lock("user-1", ttl=10, timeout=10), anyio.create_task_group() as tasks:
            tasks.start_soon(wait)

        with anyio.fail_after(5):
            async with store.lock("user-1", ttl=10, timeout=1):
                pass

    async def test_forgets_idle_keys(self, store):
        """The per-key locks of this process are dropped once no task uses them."""
        for number in range(20):
            async with store.lock(f"user-{number}", ttl=10, timeout=10):
                pass

        assert len(store._locks) == 0


@shared_stores
class TestSharedLock:
    async def test_excludes_other_processes(self, store_factory):
        """A second store on the same backend (another process) waits for the holder."""
        first, second = store_factory(), store_factory()
        async with first.lock("user-1", ttl=10, timeout=5):
            with pytest.raises(StoreLockTimeoutError):
                async with second.lock("user-1", ttl=10, timeout=0.3):
                    pytest.fail("two processes held one user key")

        with anyio.fail_after(5):
            async with second.lock("user-1", ttl=10, timeout=2):
                pass

    async def test_dead_holder_expires(self, store_factory):
        """A lock whose holder stopped renewing it (a dead worker) is taken after its ttl."""
        dead, alive = store_factory(), store_factory()
        assert await dead._lease.try_acquire("user-1", "dead-token", 0.5) is None
        start = anyio.current_time()

        with anyio.fail_after(10):
            async with alive.lock("user-1", ttl=10, timeout=8):
                waited = anyio.current_time() - start

        assert waited >= 0.3  # not before the dead holder's lock expired (0.5 s, some slack)

    async def test_foreign_release_is_ignored(self, store_factory):
        """Only the holder's token releases a lock; another worker's release leaves it held."""
        holder, other = store_factory(), store_factory()
        assert await holder._lease.try_acquire("user-1", "holder-token", 30) is None

        await other._lease.release("user-1", "other-token")

        assert await other._lease.try_acquire("user-1", "other-token", 30) is not None
        assert not await other._lease.renew("user-1", "other-token", 30)
        assert await holder._lease.renew("user-1", "holder-token", 30)

    async def test_renewed_while_held(self, store_factory):
        """A turn longer than the ttl keeps its lock: it is renewed while held."""
        holder, other = store_factory(), store_factory()
        holding = anyio.Event()

        async def hold() -> None:
            async with holder.lock("user-1", ttl=0.3, timeout=5):
                holding.set()
                await anyio.sleep(1.2)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold)
            await holding.wait()
            with pytest.raises(StoreLockTimeoutError):
                async with other.lock("user-1", ttl=10, timeout=0.8):
                    pytest.fail("the lock expired while its holder was alive")

    async def test_lost_lease_cannot_renew(self, store_factory):
        """Once an expired lock is taken by another worker, the old holder cannot renew it."""
        old, new = store_factory(), store_factory()
        assert await old._lease.try_acquire("user-1", "old-token", 0.2) is None
        await anyio.sleep(0.4)
        assert await new._lease.try_acquire("user-1", "new-token", 30) is None

        assert not await old._lease.renew("user-1", "old-token", 30)
        await old._lease.release("user-1", "old-token")
        assert await new._lease.renew("user-1", "new-token", 30)
