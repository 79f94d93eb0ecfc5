"""`SQLiteStore`: WAL, a versioned schema, and database calls off the event loop."""

from __future__ import annotations

import sqlite3
import threading

import anyio
import pytest

from quickchat_async import SQLiteStore, StoreError, StoreRecord, ValidationError


pytestmark = pytest.mark.anyio


@pytest.fixture(name="path")
def _path(tmp_path):
    return tmp_path / "bot.db"


class TestFile:
    async def test_wal_mode(self, path):
        """The file is switched to WAL mode, so readers never wait for the writer."""
        async with SQLiteStore(path) as store:
            await store.load("user-1")

        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection.close()

    async def test_schema_version(self, path):
        """The file records the version of its tables' layout."""
        async with SQLiteStore(path) as store:
            await store.load("user-1")

        connection = sqlite3.connect(path)
        row = connection.execute(
            "SELECT value FROM quickchat_async_meta WHERE name = 'schema'"
        ).fetchone()
        connection.close()
        assert row == ("1",)

    async def test_newer_schema_refused(self, path):
        """A file written by a newer SDK is refused with a StoreError asking to upgrade."""
        async with SQLiteStore(path) as store:
            await store.load("user-1")
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("UPDATE quickchat_async_meta SET value = '2'")
        connection.close()

        async with SQLiteStore(path) as store:
            with pytest.raises(StoreError, match="upgrade"):
                await store.load("user-1")

    async def test_shares_file_with_app_tables(self, path):
        """The store's tables live beside an app's own tables in one file."""
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            connection.execute("INSERT INTO users (name) VALUES ('ada')")
        connection.close()

        async with SQLiteStore(path) as store:
            await store.save("user-1", StoreRecord("data", "r1"), replaces=None)

        connection = sqlite3.connect(path)
        assert connection.execute("SELECT name FROM users").fetchall() == [("ada",)]
        connection.close()

    async def test_lock_rows_removed(self, path):
        """A released lock leaves no row behind."""
        async with SQLiteStore(path) as store, store.lock("user-1", ttl=10, timeout=5):
            pass

        connection = sqlite3.connect(path)
        assert connection.execute("SELECT * FROM quickchat_async_locks").fetchall() == []
        connection.close()

    async def test_unopenable(self, tmp_path):
        """A file that cannot be opened raises StoreError, caused by sqlite3's error."""
        async with SQLiteStore(tmp_path / "missing-dir" / "bot.db") as store:
            with pytest.raises(StoreError, match="unable to open") as caught:
                await store.load("user-1")

        assert isinstance(caught.value.__cause__, sqlite3.Error)


class TestEventLoop:
    async def test_waiting_on_the_database_does_not_block(self, path):
        """While a statement waits for another process's write, the event loop keeps running."""
        async with SQLiteStore(path, busy_timeout=10) as store:
            await store.load("user-1")  # create the file and tables
            other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await anyio.sleep(0.01)
                    ticks += 1

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(tick)
                saving = anyio.Event()

                async def save() -> None:
                    saving.set()
                    await store.save("user-1", StoreRecord("data", "r1"), replaces=None)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(save)
                await saving.wait()
                await anyio.sleep(0.3)
                assert ticks >= 5  # the loop ran while the save waited
                other.execute("COMMIT")

            other.close()
            assert await store.load("user-1") == StoreRecord("data", "r1")

    async def test_calls_run_in_worker_threads(self, path):
        """Database calls run in a worker thread, never on the event loop's thread."""
        threads: set[int] = set()
        async with SQLiteStore(path) as store:
            await store._run(lambda _connection: threads.add(threading.get_ident()))

        assert threads
        assert threading.get_ident() not in threads


class TestLifecycle:
    async def test_closed(self, path):
        """A closed store raises StoreError; closing twice is harmless."""
        store = SQLiteStore(path)
        await store.load("user-1")
        await store.aclose()
        await store.aclose()

        with pytest.raises(StoreError, match="closed"):
            await store.load("user-1")
        assert "closed" in repr(store)

    async def test_never_opened(self, path):
        """Closing a store that was never used creates no file."""
        await SQLiteStore(path).aclose()

        assert not path.exists()

    @pytest.mark.parametrize("busy_timeout", [0, -1, "5", True, float("nan")])
    def test_bad_busy_timeout(self, path, busy_timeout):
        """busy_timeout must be a positive number of seconds."""
        with pytest.raises(ValidationError, match="busy_timeout"):
            SQLiteStore(path, busy_timeout=busy_timeout)
