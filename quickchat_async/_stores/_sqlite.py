"""`SQLiteStore`: stored conversations in one SQLite file, the embedded default for a bot.

The standard library's `sqlite3` is blocking, so every database call runs in a worker thread
(`anyio.to_thread.run_sync`), one at a time over one connection: an event loop's calls take
turns through a `CapacityLimiter` of 1 (so they hold one worker thread at most), and a thread
lock keeps the calls of event loops in several threads apart. The event loop never waits on
the disk, and the connection is never used by two threads at once.

Several processes on one machine may share the file: the database runs in WAL mode (readers
never wait for the writer), every statement is short, and a user key's lock is a row with an
owner token and an expiry in wall-clock time, which all processes of a machine share.
"""

# pyright: reportPrivateUsage=false
# ruff: noqa: SLF001
# The lock rows are part of the store: `_RowLease` runs its statements through the store.

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, TypeVar

import anyio
import anyio.abc

from quickchat_async._exceptions import StoreConflictError, StoreError
from quickchat_async._loops import LoopLocal
from quickchat_async._validation import check_seconds, check_user_key

from ._base import KeyedLocks, StoreRecord, hold_lease


__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger("quickchat_async.stores")

_T = TypeVar("_T")

#: The version of the tables' layout, kept in the file; a newer one is refused, not guessed at.
SCHEMA_VERSION: Final = 1
_DEFAULT_BUSY_TIMEOUT: Final = 5.0
_WAL_RETRY: Final = 0.01

# Tables carry the package's name so the file can be shared with an app's own tables.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS quickchat_async_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quickchat_async_conversations (
    user_key TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    data TEXT NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quickchat_async_locks (
    user_key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""


def _use_wal(connection: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode (it stays so), retrying while another process holds it.

    Changing the journal mode does not wait through SQLite's busy handler: two processes
    opening a new file at once would see "database is locked" at once, so wait here instead.
    """
    deadline = time.monotonic() + busy_timeout
    while not _try_wal(connection, give_up=time.monotonic() > deadline):
        time.sleep(_WAL_RETRY)


def _try_wal(connection: sqlite3.Connection, *, give_up: bool) -> bool:
    if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return True
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) or give_up:
            raise
        return False
    return True  # WAL, or a mode that has none (":memory:")


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open the file, switch it to WAL and create or check the schema."""
    # isolation_level=None: autocommit, with explicit BEGIN IMMEDIATE where a read must be
    # followed by a write in one transaction. check_same_thread=False: the store hands the
    # connection from one worker thread to the next, never to two at once.
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _use_wal(connection, busy_timeout)
        # FULL syncs the WAL on every commit: a saved turn survives a power cut, not only a
        # crash of the process. Turns come seconds apart, so the cost does not show.
        connection.execute("PRAGMA synchronous=FULL")
        # Each statement is idempotent and atomic, so processes opening a new file at once
        # cannot trip over each other.
        connection.executescript(_SCHEMA)
        connection.execute(
            "INSERT OR IGNORE INTO quickchat_async_meta (name, value) VALUES ('schema', ?)",
            (str(SCHEMA_VERSION),),
        )
        (version,) = connection.execute(
            "SELECT value FROM quickchat_async_meta WHERE name = 'schema'"
        ).fetchone()
        if not str(version).isdigit() or int(version) > SCHEMA_VERSION:
            msg = (
                f"{path!r} holds stored conversations in schema version {version}, which this "
                f"SDK cannot read (it reads {SCHEMA_VERSION}); upgrade quickchat-async."
            )
            raise StoreError(msg)  # noqa: TRY301 -- the connection must close on any error
    except BaseException:
        connection.close()
        raise
    return connection


class SQLiteStore(anyio.abc.AsyncResource):
    """Keeps conversations in an SQLite file: the embedded default for a single bot process.

    Several processes on one machine may share the file (two workers, a restart while the old
    process drains): their turns for one user are serialised by a lock row that expires
    `ttl` seconds after its holder last renewed it. Do not put the file on a network file
    system: WAL mode needs the processes on one machine.

    The file is opened on first use, from a worker thread; `async with` or `aclose()` closes it.

    Args:
        path: the database file (created if missing). It may hold other tables too.
        busy_timeout: seconds one statement waits for another process's write to end.

    Raises:
        ValidationError: on a bad argument.
    """

    __slots__ = (
        "_busy_timeout",
        "_closed",
        "_connection",
        "_lease",
        "_limiters",
        "_locks",
        "_using",
        "path",
    )

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = _DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self.path: str = os.fspath(path)
        self._busy_timeout = check_seconds(busy_timeout, name="busy_timeout")
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._limiters = LoopLocal(lambda: anyio.CapacityLimiter(1))
        self._using = threading.Lock()
        self._locks = KeyedLocks()
        self._lease = _RowLease(self)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<SQLiteStore path={self.path!r}{state}>"

    # --- running statements off the event loop ------------------------------------------------

    async def _run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise self._closed_error()
        with self._limiters.lend() as limiter:
            return await anyio.to_thread.run_sync(self._call, operation, limiter=limiter)

    def _call(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """In the worker thread: open the connection if needed and run one operation."""
        with self._using:
            if self._closed:  # closed while this call waited for the thread
                raise self._closed_error()
            try:
                if self._connection is None:
                    self._connection = _connect(self.path, self._busy_timeout)
                return operation(self._connection)
            except sqlite3.Error as exc:
                raise StoreError(f"The SQLite store {self.path!r} failed: {exc}.") from exc

    def _closed_error(self) -> StoreError:
        return StoreError(f"This SQLiteStore ({self.path!r}) is closed.")

    # --- the protocol -------------------------------------------------------------------------

    def lock(
        self, user_key: str, *, ttl: float, timeout: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user key against other tasks of this process and other processes.

        Raises:
            StoreLockTimeoutError: the lock was not obtained within `timeout` seconds.
            StoreError: the database failed.
        """
        return hold_lease(
            self._lease, self._locks, check_user_key(user_key), ttl=ttl, timeout=timeout
        )

    async def load(self, user_key: str) -> StoreRecord | None:
        """The user's record, or None.

        Raises:
            StoreError: the database failed.
        """
        user_key = check_user_key(user_key)

        def load(connection: sqlite3.Connection) -> StoreRecord | None:
            row = connection.execute(
                "SELECT data, revision FROM quickchat_async_conversations WHERE user_key = ?",
                (user_key,),
            ).fetchone()
            return None if row is None else StoreRecord(data=row[0], revision=row[1])

        return await self._run(load)

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        """Store the record if the stored revision is still `replaces`, in one statement.

        Raises:
            StoreConflictError: another revision is stored.
            StoreError: the database failed.
        """
        user_key = check_user_key(user_key)

        def save(connection: sqlite3.Connection) -> bool:
            if replaces is None:
                cursor = connection.execute(
                    "INSERT INTO quickchat_async_conversations (user_key, revision, data, "
                    "saved_at) VALUES (?, ?, ?, ?) ON CONFLICT (user_key) DO NOTHING",
                    (user_key, record.revision, record.data, time.time()),
                )
            else:
                cursor = connection.execute(
                    "UPDATE quickchat_async_conversations SET revision = ?, data = ?, "
                    "saved_at = ? WHERE user_key = ? AND revision = ?",
                    (record.revision, record.data, time.time(), user_key, replaces),
                )
            return cursor.rowcount == 1

        if not await self._run(save):
            raise StoreConflictError(
                f"The stored conversation of user key {user_key!r} changed during the turn."
            )

    async def delete(self, user_key: str) -> None:
        """Remove the user's record, if any.

        Raises:
            StoreError: the database failed.
        """
        user_key = check_user_key(user_key)
        await self._run(
            _execute("DELETE FROM quickchat_async_conversations WHERE user_key = ?", user_key)
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the database after the calls under way. Safe to call twice."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            with self._using:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

        with anyio.CancelScope(shield=True), self._limiters.lend() as limiter:
            await anyio.to_thread.run_sync(close, limiter=limiter)


def _execute(sql: str, *params: object) -> Callable[[sqlite3.Connection], int]:
    def execute(connection: sqlite3.Connection) -> int:
        return connection.execute(sql, params).rowcount

    return execute


class _RowLease:
    """The lock of a user key as a row: (user_key, owner token, expiry in Unix time)."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def try_acquire(self, user_key: str, token: str, ttl: float) -> float | None:
        def acquire(connection: sqlite3.Connection) -> tuple[float | None, bool]:
            now = time.time()
            held = connection.execute(
                "SELECT expires_at FROM quickchat_async_locks WHERE user_key = ?", (user_key,)
            ).fetchone()
            if held is not None and held[0] > now:  # a cheap read first: no write lock taken
                return held[0] - now, False
            # One atomic statement takes the row if it is absent or expired, never otherwise.
            cursor = connection.execute(
                "INSERT INTO quickchat_async_locks (user_key, token, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_key) DO UPDATE SET token = excluded.token, "
                "expires_at = excluded.expires_at WHERE quickchat_async_locks.expires_at <= ?",
                (user_key, token, now + ttl, now),
            )
            if cursor.rowcount == 1:
                return None, held is not None
            return 0.0, False  # another process took it in between: poll again

        wait, took_over = await self._store._run(acquire)
        if took_over:
            logger.warning(
                "Took over the expired lock on user key %r: its holder stopped renewing it "
                "(it crashed or stalled) before finishing its turn.",
                user_key,
            )
        return wait

    async def renew(self, user_key: str, token: str, ttl: float) -> bool:
        def renew(connection: sqlite3.Connection) -> bool:
            return (
                connection.execute(
                    "UPDATE quickchat_async_locks SET expires_at = ? "
                    "WHERE user_key = ? AND token = ?",
                    (time.time() + ttl, user_key, token),
                ).rowcount
                == 1
            )

        return await self._store._run(renew)

    async def release(self, user_key: str, token: str) -> None:
        if self._store._closed:  # the lock row expires by itself
            return
        await self._store._run(
            _execute(
                "DELETE FROM quickchat_async_locks WHERE user_key = ? AND token = ?",
                user_key,
                token,
            )
        )
