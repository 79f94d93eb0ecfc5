"""`MemoryStore`: stored conversations in a dict, for tests, scripts and notebooks."""

from __future__ import annotations

import threading
from contextlib import AbstractAsyncContextManager
from time import monotonic

import anyio.abc

from quickchat_async._exceptions import StoreConflictError
from quickchat_async._validation import check_user_key

from ._base import KeyedLocks, StoreRecord, hold_lease


__all__ = ["MemoryStore"]


class MemoryStore(anyio.abc.AsyncResource):
    """Keeps conversations in this process's memory; they are gone when it exits.

    Turns of one user key are serialised across the tasks of this process: those of one event
    loop queue in order, and event loops in several threads share a lease kept in memory.

    Records are kept as the same JSON text the other stores write, so a test with a
    `MemoryStore` exercises the real format.
    """

    __slots__ = ("_lease", "_locks", "_records")

    def __init__(self) -> None:
        self._records: dict[str, StoreRecord] = {}
        self._locks = KeyedLocks()
        self._lease = _MemoryLease()

    def __len__(self) -> int:
        """How many user keys have a stored conversation."""
        return len(self._records)

    def __repr__(self) -> str:
        return f"<MemoryStore conversations={len(self._records)}>"

    def lock(
        self, user_key: str, *, ttl: float, timeout: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user key against other tasks of this process, on any event loop.

        Raises:
            StoreLockTimeoutError: the lock was not obtained within `timeout` seconds.
        """
        return hold_lease(
            self._lease, self._locks, check_user_key(user_key), ttl=ttl, timeout=timeout
        )

    async def load(self, user_key: str) -> StoreRecord | None:
        """The user's record, or None."""
        return self._records.get(check_user_key(user_key))

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        """Store the record if the stored revision is still `replaces`.

        Raises:
            StoreConflictError: another revision is stored.
        """
        current = self._records.get(check_user_key(user_key))
        if (current.revision if current is not None else None) != replaces:
            raise StoreConflictError(
                f"The stored conversation of user key {user_key!r} changed during the turn."
            )
        self._records[user_key] = record

    async def delete(self, user_key: str) -> None:
        """Remove the user's record, if any."""
        self._records.pop(check_user_key(user_key), None)

    async def aclose(self) -> None:
        """Nothing to release; the records stay readable."""


class _MemoryLease:
    """The lock of a user key across the event loops of this process: owner token and expiry."""

    __slots__ = ("_guard", "_held")

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._guard = threading.Lock()  # the loops run in several threads

    async def try_acquire(self, user_key: str, token: str, ttl: float) -> float | None:
        now = monotonic()
        with self._guard:
            held = self._held.get(user_key)
            if held is not None and held[1] > now:
                return held[1] - now
            self._held[user_key] = (token, now + ttl)
        return None

    async def renew(self, user_key: str, token: str, ttl: float) -> bool:
        with self._guard:
            held = self._held.get(user_key)
            if held is None or held[0] != token:
                return False
            self._held[user_key] = (token, monotonic() + ttl)
        return True

    async def release(self, user_key: str, token: str) -> None:
        with self._guard:
            held = self._held.get(user_key)
            if held is not None and held[0] == token:
                del self._held[user_key]
