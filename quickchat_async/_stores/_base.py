"""What every conversation store shares: the protocol, the record, user keys, locks and format.

A store keeps one record per user key: an opaque JSON text plus a revision, saved with a
compare-and-set on that revision. The record's format (a versioned envelope around
`Conversation.snapshot()`) is written and read here, once for every store, so a store only has
to persist two strings.

Locking has two layers. Tasks of one process queue on an `anyio.Lock` per user key (fair, in
arrival order, and without touching the backend). The task at the head of that queue then takes
the store's shared lock, if it has one: a lease with an owner token and an expiry, renewed while
the turn runs, and released only by its owner.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, TypeVar, TypeVarTuple, cast, runtime_checkable

import anyio
import attrs
import orjson

from quickchat_async._exceptions import StoreError, StoreLockTimeoutError
from quickchat_async._types import JSONValue


__all__ = [
    "RECORD_FORMAT_VERSION",
    "ConversationStore",
    "KeyedLocks",
    "Lease",
    "StoreRecord",
    "decode_record",
    "encode_record",
    "hold_lease",
    "new_revision",
    "run_to_completion",
]

logger = logging.getLogger("quickchat_async.stores")

#: The format version of the record envelope that stores persist.
RECORD_FORMAT_VERSION: Final = 1
_RECORD_KIND: Final = "quickchat-async/stored-conversation"

#: Polling for a shared lock held elsewhere starts fast (a turn often ends within milliseconds of
#: the first poll) and backs off to this, with jitter so that waiting workers do not move in step.
_POLL_FIRST: Final = 0.01
_POLL_MAX: Final = 0.25
#: A lease is renewed this many times per `ttl`, so one or two missed renewals (a slow store, a
#: busy event loop) do not lose it.
_RENEWALS_PER_TTL: Final = 3
#: Releasing a lease runs shielded from cancellation, but never longer than this.
_RELEASE_DEADLINE: Final = 10.0


_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


async def run_to_completion(function: Callable[[*_Ts], Awaitable[_T]], *args: *_Ts) -> _T:
    """Run `function(*args)` to its end whatever cancels the caller meanwhile, then go on.

    A shielded cancel scope holds off anyio's and trio's cancellation, but not asyncio's own
    (`task.cancel()`, `asyncio.wait_for`, `asyncio.timeout`), which is delivered inside the
    shield all the same. So the work runs in a task of its own, shielded, which the caller's
    cancellation does not reach; the caller waits for it in a task group, which waits for its
    tasks whatever cancels it, and then re-raises the cancellation. The work's own exception
    is raised as is.
    """
    outcome: list[tuple[bool, object]] = []

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                outcome.append((True, await function(*args)))
            except Exception as exc:  # noqa: BLE001 -- re-raised in the caller, unwrapped
                outcome.append((False, exc))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
    done, value = outcome[0]
    if not done:
        raise cast("Exception", value)
    return cast("_T", value)


def new_revision() -> str:
    """A fresh revision for a record: random, so a deleted and re-created record never repeats."""
    return secrets.token_hex(8)


@attrs.frozen(slots=True, repr=False)
class StoreRecord:
    """What a store keeps for one user key.

    Attributes:
        data: the record as JSON text, written and read by the SDK; a store keeps it verbatim.
        revision: an opaque string that changes with every save, for compare-and-set.
    """

    data: str
    revision: str

    def __repr__(self) -> str:  # the data holds messages: leave it out
        return f"<StoreRecord revision={self.revision!r} chars={len(self.data)}>"


@runtime_checkable
class ConversationStore(Protocol):
    """Where stored conversations live: a record and a lock per user key.

    `AsyncQuickchat.conversation_for()` drives a store; apps only create, share and close one.
    To write a store for another backend, implement these five methods:

    - `lock(user_key, ttl=..., timeout=...)` returns an async context manager that holds the
      user key exclusively: against other tasks of this process and, for a shared store,
      against every other process using it. The lock must expire `ttl` seconds after it was
      last renewed (so a crashed worker cannot block a user forever), be renewed while held,
      and be released only by its holder. It raises `StoreLockTimeoutError` when the lock is
      not obtained within `timeout` seconds.
    - `load(user_key)` returns the user's `StoreRecord`, or None.
    - `save(user_key, record, replaces=...)` stores the record only if the stored revision is
      `replaces` (None: only if no record is stored), atomically; otherwise it raises
      `StoreConflictError` and changes nothing.
    - `delete(user_key)` removes the user's record, if any.
    - `aclose()` releases the backend's connections.

    Backend failures are raised as `StoreError`.
    """

    def lock(
        self, user_key: str, *, ttl: float, timeout: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user key exclusively for one turn."""
        ...

    async def load(self, user_key: str) -> StoreRecord | None:
        """The user's record, or None."""
        ...

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        """Store the record if the stored revision is still `replaces`."""
        ...

    async def delete(self, user_key: str) -> None:
        """Remove the user's record."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources."""
        ...


# --- locks ---------------------------------------------------------------------------------------


@attrs.define(slots=True)
class _KeyLock:
    lock: anyio.Lock
    users: int = 0
    holder: int | None = None  # the id of the task holding it


class KeyedLocks:
    """One fair `anyio.Lock` per user key, dropped again when no task holds or awaits it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, _KeyLock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, user_key: str, *, timeout: float) -> AsyncGenerator[None]:  # noqa: ASYNC109
        """Hold the key's lock; raise `StoreLockTimeoutError` after `timeout` seconds of waiting."""
        task = anyio.get_current_task().id
        entry = self._locks.get(user_key)
        if entry is None:
            entry = self._locks[user_key] = _KeyLock(anyio.Lock(fast_acquire=True))
        elif entry.holder == task:
            raise StoreError(
                f"This task already holds the lock on user key {user_key!r}: a turn of that "
                "user cannot start inside another one, it would wait for itself."
            )
        entry.users += 1
        try:
            acquired = False
            with anyio.move_on_after(timeout):
                await entry.lock.acquire()
                acquired = True
            if not acquired:
                raise _lock_timeout(user_key, timeout)
            entry.holder = task
            try:
                yield
            finally:
                entry.holder = None
                entry.lock.release()
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[user_key]


class Lease(Protocol):
    """The three operations of a shared, expiring lock; a store with one implements them.

    Each runs one atomic step on the backend, with `token` naming the holder.
    """

    async def try_acquire(self, user_key: str, token: str, ttl: float) -> float | None:
        """Take the lock if free or expired: None when taken, else how long it may stay held."""
        ...

    async def renew(self, user_key: str, token: str, ttl: float) -> bool:
        """Move the expiry `ttl` seconds ahead if `token` holds the lock; say whether it does."""
        ...

    async def release(self, user_key: str, token: str) -> None:
        """Free the lock if `token` holds it; never free another holder's lock."""
        ...


def _lock_timeout(user_key: str, timeout: float) -> StoreLockTimeoutError:
    return StoreLockTimeoutError(
        f"Timed out after {timeout:g} s waiting for the lock on user key {user_key!r}: another "
        "turn of this user is running (or a crashed worker's lock has not expired yet). The "
        "message was not sent. Raise lock_timeout, or try again."
    )


@contextlib.asynccontextmanager
async def hold_lease(
    lease: Lease,
    local: KeyedLocks,
    user_key: str,
    *,
    ttl: float,
    timeout: float,  # noqa: ASYNC109 -- bounds two waits together, and is reported as our error
) -> AsyncGenerator[None]:
    """Hold a user key: first in this process, then across processes through `lease`.

    `timeout` bounds both waits together. While the body runs, a background task renews the
    lease every `ttl / 3` seconds, so a turn may outlast `ttl` as long as its process is alive.
    """
    deadline = anyio.current_time() + timeout
    async with local.hold(user_key, timeout=timeout):
        token = secrets.token_hex(16)
        try:
            acquired = False
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                await _acquire(lease, user_key, token, ttl)
                acquired = True
            if not acquired:
                raise _lock_timeout(user_key, timeout)
            async with _renewing(lease, user_key, token, ttl):
                yield
        finally:
            # Also after a timeout or cancellation during acquisition: the backend may have
            # granted the lock just before. Releasing compares the token, so it is always safe.
            # It runs to its end whatever cancels the turn (asyncio's own cancellation too), or
            # the user would wait for the lock's expiry.
            await run_to_completion(_release, lease, user_key, token, ttl)


async def _release(lease: Lease, user_key: str, token: str, ttl: float) -> None:
    with anyio.move_on_after(_RELEASE_DEADLINE):
        try:
            await lease.release(user_key, token)
        except StoreError as exc:
            logger.warning(
                "Could not release the lock on user key %r (%s); it expires in %g s.",
                user_key,
                exc,
                ttl,
            )


async def _acquire(lease: Lease, user_key: str, token: str, ttl: float) -> None:
    poll = _POLL_FIRST
    while True:
        held_for = await lease.try_acquire(user_key, token, ttl)
        if held_for is None:
            return
        # Jitter is for spreading load, not for security.
        pause = poll * random.uniform(0.5, 1.0)  # noqa: S311
        await anyio.sleep(min(pause, max(held_for, 0.001)))
        poll = min(poll * 2, _POLL_MAX)


@contextlib.asynccontextmanager
async def _renewing(lease: Lease, user_key: str, token: str, ttl: float) -> AsyncGenerator[None]:
    """Renew the lease in the background while the body runs.

    The body's exception is caught and re-raised outside the task group, so callers see it as
    is, not wrapped in an ExceptionGroup.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_keep_renewing, lease, user_key, token, ttl)
        try:
            yield
        except Exception as exc:  # noqa: BLE001 -- re-raised below, unwrapped
            error = exc
        finally:
            tasks.cancel_scope.cancel()
    if error is not None:
        raise error


async def _keep_renewing(lease: Lease, user_key: str, token: str, ttl: float) -> None:
    interval = ttl / _RENEWALS_PER_TTL
    while True:
        await anyio.sleep(interval)
        try:
            held = await lease.renew(user_key, token, ttl)
        except StoreError as exc:
            # The lease still has up to two thirds of its ttl left: try again at the next tick.
            logger.warning("Could not renew the lock on user key %r: %s", user_key, exc)
            continue
        if not held:
            # The turn goes on (its request may be in flight); its save will find out whether
            # another worker took over, and refuse to overwrite it.
            logger.warning(
                "The lock on user key %r expired before its turn ended (the worker stalled for "
                "over %g s); another worker may have taken over.",
                user_key,
                ttl,
            )
            return


# --- the record format -----------------------------------------------------------------------

#: For what orjson refuses although it is JSON (integers beyond 64 bits); allow_nan=False.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_record(*, user_key: str, scenario_id: str, conversation: Mapping[str, JSONValue]) -> str:
    """Wrap a `Conversation.snapshot()` in the store's versioned envelope, as JSON text.

    The snapshot holds no credential (the client keeps those), and neither does the envelope.
    The text is valid UTF-8 (every backend stores it so), or this raises.

    Raises:
        StoreError: the conversation holds what JSON in UTF-8 cannot carry (half of a UTF-16
            pair, a number that is not finite), or is nested too deeply.
    """
    envelope: dict[str, JSONValue] = {
        "kind": _RECORD_KIND,
        "version": RECORD_FORMAT_VERSION,
        "user_key": user_key,
        "scenario_id": scenario_id,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(),
        "conversation": dict(conversation),
    }
    try:
        return orjson.dumps(envelope).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        text = _ENCODER.encode(envelope)
        text.encode()  # refuses half of a UTF-16 pair, which no backend can store
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: a ValueError
        reason = type(exc).__name__ if isinstance(exc, UnicodeError) else exc
        raise StoreError(
            f"The conversation of user key {user_key!r} cannot be stored as JSON ({reason})."
        ) from None
    return text


@attrs.frozen(slots=True)
class DecodedRecord:
    """The parts of a record envelope the stored conversation uses."""

    scenario_id: str
    conversation: dict[str, JSONValue]


def decode_record(data: str, *, user_key: str) -> DecodedRecord:
    """Read a record envelope.

    Raises:
        StoreError: when the text is not a record this SDK wrote, or is from a newer SDK.
    """

    def unreadable(reason: str) -> StoreError:
        return StoreError(f"The stored conversation of user key {user_key!r} {reason}.")

    try:
        decoded: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses although it is JSON: integers beyond 64 bits
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            raise unreadable("is not JSON") from None
    if not isinstance(decoded, dict):
        raise unreadable("is not a record written by quickchat-async")
    envelope = cast("dict[str, JSONValue]", decoded)
    if envelope.get("kind") != _RECORD_KIND:
        raise unreadable("is not a record written by quickchat-async")
    version = envelope.get("version")
    if type(version) is not int or version < 1:
        raise unreadable(f"has an invalid format version {version!r}")
    if version > RECORD_FORMAT_VERSION:
        raise unreadable(
            f"has format version {version}, newer than this SDK reads ({RECORD_FORMAT_VERSION}); "
            "upgrade quickchat-async"
        )
    scenario_id = envelope.get("scenario_id")
    conversation = envelope.get("conversation")
    if not isinstance(scenario_id, str) or not isinstance(conversation, dict):
        raise unreadable("lacks its scenario_id or conversation")
    return DecodedRecord(scenario_id, conversation)
