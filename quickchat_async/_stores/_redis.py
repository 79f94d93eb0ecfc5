"""`RedisStore`: stored conversations in Redis, for a fleet of bot workers on several machines.

It runs on `redis.asyncio` (the `[redis]` extra), imported only when a `RedisStore` is created,
so the rest of the SDK never loads it. `redis.asyncio` is built on asyncio: this store does not
run under trio. A `redis.asyncio` client and its connections belong to one event loop, so a
store made from a URL makes a client for each event loop it runs on, and closes it as that loop
ends (`quickchat_async._loops.PerLoop`).

Per user key there are two Redis keys:

- `{prefix}conversation:{user_key}`, a hash with the record's `revision` and `data`, replaced by
  a Lua compare-and-set on the revision;
- `{prefix}lock:{user_key}`, the lock: `SET NX PX ttl` with a random owner token. Redis expires
  it by its own clock, so a worker that dies mid-turn frees the user `ttl` seconds after its
  last renewal, whatever the clocks of the workers say. Renewing and releasing are Lua scripts
  that compare the token first: a worker never extends or deletes a lock it no longer holds.
"""

# pyright: reportPrivateUsage=false
# ruff: noqa: SLF001
# The lock keys are part of the store: `_KeyLease` uses the store's client, keys and scripts.

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final

import anyio.abc
import sniffio

from quickchat_async._exceptions import (
    EventLoopError,
    StoreConflictError,
    StoreError,
    ValidationError,
)
from quickchat_async._loops import PerLoop
from quickchat_async._validation import check_user_key

from ._base import KeyedLocks, StoreRecord, hold_lease


if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

logger = logging.getLogger("quickchat_async.stores")

#: What every key of the store starts with, so one Redis can serve several apps or AI Agents.
DEFAULT_PREFIX: Final = "quickchat-async:"
#: Socket timeouts of a client the store creates from a URL: a hung Redis fails a turn with a
#: `StoreError` instead of stalling it.
_SOCKET_TIMEOUT: Final = 10.0
_CONNECT_TIMEOUT: Final = 5.0

_SAVE_IF_REVISION: Final = """
local current = redis.call('HGET', KEYS[1], 'revision')
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'data', ARGV[3])
return 1
"""
_RENEW_IF_OWNER: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_IF_OWNER: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_str(value: object, *, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}.")
    return value


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Connection:
    """A Redis client for one event loop, with the store's scripts registered on it."""

    __slots__ = ("client", "release", "renew", "save")

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.save: AsyncScript = client.register_script(_SAVE_IF_REVISION)
        self.renew: AsyncScript = client.register_script(_RENEW_IF_OWNER)
        self.release: AsyncScript = client.register_script(_RELEASE_IF_OWNER)


class _Clients:
    """Where the store's Redis clients come from: the first one, then one per event loop."""

    __slots__ = ("_make", "first", "owned", "shown")

    def __init__(self, first: Redis, make: Callable[[], Redis] | None) -> None:
        #: The first client until an event loop claims it.
        self.first: Redis | None = first
        #: The first client, for `RedisStore.client` when no loop's client is open.
        self.shown = first
        self._make = make
        self.owned = make is not None

    def __call__(self) -> _Connection:
        client, self.first = self.first, None
        if client is None:
            if self._make is None:
                raise EventLoopError(
                    "This RedisStore talks through a Redis client of yours, which belongs to "
                    "the event loop that first used it, not to this one. Give the store a URL "
                    "instead (it then makes a client for each event loop it runs on), or "
                    "create the client and the store inside the code this event loop runs."
                )
            client = self._make()
        return _Connection(client)

    async def close(self, connection: _Connection) -> None:
        if self.owned:
            await connection.client.aclose()


class RedisStore(anyio.abc.AsyncResource):
    """Keeps conversations in Redis, shared by bot workers on any number of machines.

    Every worker points a `RedisStore` at the same Redis (and prefix). Turns of one user key
    are serialised across all of them by a lock that Redis expires `ttl` seconds after its
    holder last renewed it; it is renewed while the turn runs, and only its holder can
    release it.

    For durability, run Redis with the append-only file on (`appendonly yes`): a turn counts
    as saved once Redis acknowledged it, and without persistence a Redis restart forgets
    every conversation.

    Args:
        url: where Redis is, such as `redis://127.0.0.1:6379/0` or `rediss://...` for TLS. The
            store creates a client for each event loop it runs on, and closes each as its
            loop ends, or in `aclose()`.
        client: a caller-owned `redis.asyncio.Redis` instead of a URL; the store never closes
            it, and uses it on the event loop that first used it only. It may decode
            responses or not.
        prefix: what every key of the store starts with.

    Raises:
        ValidationError: neither or both of url and client, or a bad prefix.
        ImportError: the `redis` package is missing (`pip install 'quickchat-async[redis]'`).
    """

    __slots__ = (
        "_clients",
        "_closed",
        "_connections",
        "_errors",
        "_lease",
        "_locks",
        "prefix",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        try:
            from redis import asyncio as aioredis  # noqa: PLC0415 -- the optional dependency
            from redis import exceptions  # noqa: PLC0415
        except ImportError as exc:
            msg = "RedisStore needs the redis package: pip install 'quickchat-async[redis]'."
            raise ImportError(msg) from exc
        if (url is None) == (client is None):
            raise ValidationError("Pass RedisStore a url or a client (a redis.asyncio.Redis).")
        _check_str(prefix, name="prefix")
        make: Callable[[], Redis] | None = None
        if url is not None:
            make = functools.partial(
                aioredis.Redis.from_url,  # pyright: ignore[reportUnknownMemberType]
                _check_str(url, name="url"),
                socket_timeout=_SOCKET_TIMEOUT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
            )
            client = make()
        elif not isinstance(client, aioredis.Redis):
            raise ValidationError(
                f"client must be a redis.asyncio.Redis, not {type(client).__name__}."
            )
        assert client is not None  # noqa: S101 -- for the type checkers
        self._clients = _Clients(client, make)
        self._connections = PerLoop(self._clients, self._clients.close)
        self.prefix: str = prefix
        self._errors: tuple[type[BaseException], ...] = (exceptions.RedisError, OSError)
        self._closed = False
        self._locks = KeyedLocks()
        self._lease = _KeyLease(self)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RedisStore prefix={self.prefix!r}{state}>"

    @property
    def client(self) -> Redis:
        """The Redis client of the event loop that used the store last, while it is open.

        Before the first use, and once that loop's client is closed, the first client.
        """
        last = self._connections.last
        return self._clients.shown if last is None else last.value.client

    async def _connection(self) -> _Connection:
        """The running event loop's client and scripts."""
        if self._closed:
            raise StoreError("This RedisStore is closed.")
        return await self._connections.here()

    def _conversation_key(self, user_key: str) -> str:
        return f"{self.prefix}conversation:{user_key}"

    def _lock_key(self, user_key: str) -> str:
        return f"{self.prefix}lock:{user_key}"

    @contextlib.contextmanager
    def _translated(self) -> Generator[None]:
        """Check the store can run here, and turn Redis's errors into `StoreError`."""
        if self._closed:
            raise StoreError("This RedisStore is closed.")
        library = sniffio.current_async_library()
        if library != "asyncio":
            raise StoreError(
                f"RedisStore runs on asyncio only (redis.asyncio is built on it), not on "
                f"{library}. Use SQLiteStore, or run the bot on asyncio."
            )
        try:
            yield
        except self._errors as exc:
            raise StoreError(f"The Redis store failed: {type(exc).__name__}: {exc}") from exc

    # --- the protocol -------------------------------------------------------------------------

    def lock(
        self, user_key: str, *, ttl: float, timeout: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user key against other tasks and every other worker using this Redis.

        Raises:
            StoreLockTimeoutError: the lock was not obtained within `timeout` seconds.
            StoreError: Redis failed.
        """
        return hold_lease(
            self._lease, self._locks, check_user_key(user_key), ttl=ttl, timeout=timeout
        )

    async def load(self, user_key: str) -> StoreRecord | None:
        """The user's record, or None.

        Raises:
            StoreError: Redis failed.
            EventLoopError: the store's client is the caller's, of another event loop.
        """
        key = self._conversation_key(check_user_key(user_key))
        with self._translated():
            connection = await self._connection()
            revision, data = await connection.client.hmget(key, ["revision", "data"])
        if revision is None or data is None:
            return None
        return StoreRecord(data=_text(data), revision=_text(revision))

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        """Store the record if the stored revision is still `replaces` (one Lua script).

        Raises:
            StoreConflictError: another revision is stored.
            StoreError: Redis failed.
            EventLoopError: the store's client is the caller's, of another event loop.
        """
        key = self._conversation_key(check_user_key(user_key))
        with self._translated():
            connection = await self._connection()
            saved = await connection.save(
                keys=[key], args=[replaces or "", record.revision, record.data]
            )
        if saved != 1:
            raise StoreConflictError(
                f"The stored conversation of user key {user_key!r} changed during the turn."
            )

    async def delete(self, user_key: str) -> None:
        """Remove the user's record, if any.

        Raises:
            StoreError: Redis failed.
            EventLoopError: the store's client is the caller's, of another event loop.
        """
        key = self._conversation_key(check_user_key(user_key))
        with self._translated():
            connection = await self._connection()
            await connection.client.delete(key)

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the clients the store created. Safe to call twice.

        That of the running event loop closes now; those of event loops that ended were closed
        as they ended, and that of a loop still running in another thread closes when it ends.
        """
        if self._closed:
            return
        self._closed = True
        # Off asyncio every operation was refused, so no connection was opened to close.
        if sniffio.current_async_library() != "asyncio":
            return
        await self._connections.aclose()
        unused, self._clients.first = self._clients.first, None
        if unused is not None and self._clients.owned:  # never used by any event loop
            await unused.aclose()


class _KeyLease:
    """The lock of a user key as a Redis key holding its owner's token, with a Redis expiry."""

    __slots__ = ("_store",)

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    async def try_acquire(self, user_key: str, token: str, ttl: float) -> float | None:
        store = self._store
        key = store._lock_key(user_key)
        with store._translated():
            client = (await store._connection()).client
            if await client.set(key, token, nx=True, px=_milliseconds(ttl)):
                return None
            remaining = await client.pttl(key)
        return max(remaining, 0) / 1000

    async def renew(self, user_key: str, token: str, ttl: float) -> bool:
        store = self._store
        with store._translated():
            connection = await store._connection()
            renewed = await connection.renew(
                keys=[store._lock_key(user_key)],
                args=[token, _milliseconds(ttl)],
            )
        return bool(renewed == 1)

    async def release(self, user_key: str, token: str) -> None:
        store = self._store
        if store._closed:  # the lock expires by itself
            return
        with store._translated():
            connection = await store._connection()
            await connection.release(
                keys=[store._lock_key(user_key)],
                args=[token],
            )
