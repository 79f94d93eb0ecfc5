"""`MemoryStore`: stored conversations in a dict, for tests, scripts and notebooks."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import anyio.abc

from quickchat_async._exceptions import StoreConflictError
from quickchat_async._validation import check_user_key

from ._base import KeyedLocks, StoreRecord


__all__ = ["MemoryStore"]


class MemoryStore(anyio.abc.AsyncResource):
    """Keeps conversations in this process's memory; they are gone when it exits.

    Turns of one user key are serialised across the tasks of one event loop. There is nothing
    to share with other processes, so there is no lease either: a task cannot die holding the
    lock without releasing it, and `ttl` is not needed.

    Records are kept as the same JSON text the other stores write, so a test with a
    `MemoryStore` exercises the real format.
    """

    __slots__ = ("_locks", "_records")

    def __init__(self) -> None:
        self._records: dict[str, StoreRecord] = {}
        self._locks = KeyedLocks()

    def __len__(self) -> int:
        """How many user keys have a stored conversation."""
        return len(self._records)

    def __repr__(self) -> str:
        return f"<MemoryStore conversations={len(self._records)}>"

    def lock(
        self,
        user_key: str,
        *,
        ttl: float,  # noqa: ARG002 -- part of the protocol; nothing here can expire
        timeout: float,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user key against other tasks of this process.

        Raises:
            StoreLockTimeoutError: the lock was not obtained within `timeout` seconds.
        """
        return self._locks.hold(check_user_key(user_key), timeout=timeout)

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
