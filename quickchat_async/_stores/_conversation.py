"""`StoredConversation`: a user's conversation that lives in a store, turn by turn.

Every turn runs the same five steps under the user key's lock: load the latest record (another
task or worker may have moved the conversation on), resume it, send the message, save the new
snapshot, release. So two first messages from one user, handled at once by two tasks or two
machines, start one server conversation: the second waits, loads the first one's conv_id, and
continues it.

What is saved is exactly the state `Conversation` keeps: a confirmed turn, and also a turn whose
reply never arrived although the server may have recorded it (`UNCONFIRMED`). Keeping the
latter is what stops the next worker, or the restarted process, from opening a second server
conversation after a first message whose reply was lost, and lets the next reply's
`ord_number` settle it. A turn that cannot have reached the server saves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, Unpack

import anyio
import attrs

from quickchat_async._config import CallOptions
from quickchat_async._conversation import Conversation
from quickchat_async._exceptions import QuickchatError, StoreError, ValidationError
from quickchat_async._models import Reply, Turn
from quickchat_async._sender import AsyncSender
from quickchat_async._types import NOT_GIVEN, JSONValue
from quickchat_async._validation import (
    check_count,
    check_kb_topic,
    check_metadata,
    check_seconds,
    check_turn,
    check_user_key,
)
from quickchat_async._wire import BACKOFF

from ._base import (
    ConversationStore,
    StoreRecord,
    decode_record,
    encode_record,
    new_revision,
    run_to_completion,
)


__all__ = ["DEFAULT_STORED_HISTORY", "StoredConversation", "StoredOptions", "default_lock_ttl"]

logger = logging.getLogger("quickchat_async.stores")

#: How many turns a stored conversation keeps by default. Every turn rewrites the whole record,
#: so an unbounded history would make a years-old chat slower and larger with every message;
#: the server keeps the full conversation regardless (Quickchat's Inbox shows it).
DEFAULT_STORED_HISTORY: Final = 100
#: Added to a turn's worst case when sizing the lock, for the store's own round trips.
_LOCK_TTL_MARGIN: Final = 5.0
#: The lock's ttl when the client sets no per-attempt limit (`timeout=None`): renewals then keep
#: a long turn's lock, and a crashed worker's lock frees after this long.
_UNBOUNDED_TURN_LOCK_TTL: Final = 120.0
#: Saving the turn after the reply runs shielded from cancellation, but never longer than this.
_SAVE_DEADLINE: Final = 30.0


def default_lock_ttl(client: AsyncSender) -> float:
    """How long a turn's lock lives without renewal, by default: longer than a turn can take.

    A turn is at most `max_retries + 1` attempts of at most `timeout.total` seconds each, plus
    the backoff between them (at most 9 s each: 8 s plus 1 s of jitter), plus a 5 s margin for
    the store. With the client's defaults (30 s, 2 retries) that is 3 x 30 + 2 x 9 + 5 = 113 s.

    Waits for a server's `Retry-After` (up to a minute each) are not counted: the lock is
    renewed every third of its ttl while a turn runs, which covers them. The ttl matters when
    the worker can no longer renew it, because it crashed (another worker takes over after at
    most this long) or stalled (its turn is then refused at save time).
    """
    total = client.timeout.total
    if total is None:
        return _UNBOUNDED_TURN_LOCK_TTL
    retries = client.max_retries
    backoff = float(BACKOFF["wait_max"]) + float(BACKOFF["wait_jitter"])
    return (retries + 1) * total + retries * backoff + _LOCK_TTL_MARGIN


def _check_store(store: object) -> ConversationStore:
    if not isinstance(store, ConversationStore):
        raise ValidationError(
            "store must be a ConversationStore (MemoryStore, SQLiteStore, RedisStore, or an "
            "object with lock, load, save, delete and aclose methods)."
        )
    return store


def _optional_topic(value: object) -> str | None:
    return check_kb_topic(value)


def _optional_metadata(value: object) -> dict[str, JSONValue] | None:
    return None if value is None else check_metadata(value)


def _lock_ttl(value: object) -> float | None:
    return check_seconds(value, name="lock_ttl", optional=True)


def _lock_timeout(value: object) -> float | None:
    return check_seconds(value, name="lock_timeout", optional=True)


def _history_bound(value: object) -> int | None:
    if value is NOT_GIVEN:
        return DEFAULT_STORED_HISTORY
    return check_count(value, name="max_history", minimum=0, optional=True)


@attrs.frozen(kw_only=True)
class StoredOptions:
    """How a stored conversation is kept: see `AsyncQuickchat.conversation_for`.

    Attributes:
        kb_topic: the Knowledge Base topic the conversation starts with, or changes to.
        metadata: `client_metadata` for every message; None keeps the stored metadata.
        max_history: how many turns the store keeps (None: all).
        lock_ttl: seconds a turn's lock lives without renewal (None: `default_lock_ttl`).
        lock_timeout: seconds a turn waits for the user's lock (None: twice lock_ttl).
    """

    kb_topic: str | None = attrs.field(default=None, converter=_optional_topic)
    metadata: Mapping[str, JSONValue] | None = attrs.field(
        default=None, converter=_optional_metadata
    )
    max_history: int | None = attrs.field(default=DEFAULT_STORED_HISTORY, converter=_history_bound)
    lock_ttl: float | None = attrs.field(default=None, converter=_lock_ttl)
    lock_timeout: float | None = attrs.field(default=None, converter=_lock_timeout)


class StoredConversation:
    """A user's conversation kept in a `ConversationStore`; see `AsyncQuickchat.conversation_for`.

    It mirrors `Conversation` (`say()`, `conv_id`, `history`, `kb_topic`), but its state lives
    in the store, not in the object: each `say()` loads the latest record under the user's lock
    and saves the new one before it returns. The properties show the state as of the last
    load or save by this object.

    Args:
        client: the client turns are sent through.
        user_key: whose conversation it is, in the app's terms.
        store: where the conversation is kept.
        options: the topic, metadata, history bound and lock settings.

    Raises:
        ValidationError: on bad arguments.
    """

    __slots__ = (
        "_client",
        "_conversation",
        "_lock_timeout",
        "_lock_ttl",
        "_options",
        "_store",
        "_user_key",
    )

    def __init__(
        self,
        client: AsyncSender,
        user_key: str,
        *,
        store: ConversationStore,
        options: StoredOptions | None = None,
    ) -> None:
        self._client = client
        self._store = _check_store(store)
        self._user_key = check_user_key(user_key)
        self._options = options = options or StoredOptions()
        self._lock_ttl = default_lock_ttl(client) if options.lock_ttl is None else options.lock_ttl
        self._lock_timeout = (
            2 * self._lock_ttl if options.lock_timeout is None else options.lock_timeout
        )
        self._conversation = self._start()

    @classmethod
    async def open(
        cls,
        client: AsyncSender,
        user_key: str,
        *,
        store: ConversationStore,
        options: StoredOptions | None = None,
    ) -> StoredConversation:
        """Create it and load the user's record; use `AsyncQuickchat.conversation_for()`."""
        stored = cls(client, user_key, store=store, options=options)
        await stored.reload()
        return stored

    # --- state --------------------------------------------------------------------------------

    @property
    def user_key(self) -> str:
        """Whose conversation this is, in the app's own terms."""
        return self._user_key

    @property
    def store(self) -> ConversationStore:
        """Where the conversation is kept."""
        return self._store

    @property
    def client(self) -> AsyncSender:
        """The client turns are sent through."""
        return self._client

    @property
    def conv_id(self) -> str | None:
        """The server's conversation ID: None until the user's first turn."""
        return self._conversation.conv_id

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic sent with every request, if any."""
        return self._conversation.kb_topic

    @property
    def metadata(self) -> Mapping[str, JSONValue]:
        """The `client_metadata` sent with every message (kb_topic aside), read-only."""
        return self._conversation.metadata

    @property
    def history(self) -> tuple[Turn, ...]:
        """The stored turns, oldest first: at most the last `max_history` of them."""
        return self._conversation.history

    @property
    def unconfirmed(self) -> tuple[Turn, ...]:
        """Turns since the last reply whose messages may or may not have reached the server."""
        return self._conversation.unconfirmed

    @property
    def max_history(self) -> int | None:
        """How many turns the store keeps for this user (None: all)."""
        return self._options.max_history

    @property
    def lock_ttl(self) -> float:
        """Seconds a turn's lock lives without renewal; see `default_lock_ttl`."""
        return self._lock_ttl

    @property
    def lock_timeout(self) -> float:
        """Seconds a turn waits for the user's lock before `StoreLockTimeoutError`."""
        return self._lock_timeout

    def __repr__(self) -> str:
        return (
            f"<StoredConversation user_key={self._user_key!r} conv_id={self.conv_id!r} "
            f"turns={len(self._conversation.history)}>"
        )

    # --- talking ------------------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        context: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        **options: Unpack[CallOptions],
    ) -> Reply:
        """Send a message in the user's conversation, and save the turn before returning.

        Under the user's lock: load the latest record, send, save, release. Once the reply is
        in, saving it is shielded from cancellation, so the store does not fall behind the
        server. A turn that fails before the server can have seen it saves nothing; one whose
        outcome is unknown is saved as `UNCONFIRMED` (see `Conversation.say`), then the error
        is raised.

        Args:
            text: the user's message.
            context: `message_context` for this message, at most 1000 characters.
            metadata: `client_metadata` for this message only, merged over the conversation's.
            **options: per-call `timeout`, `max_retries`, `deadline`, `extra_headers` and
                `extra_body`, for this turn only (see `CallOptions`). The deadline bounds the
                exchange with Quickchat, not the wait for the user's lock.

        Raises:
            ValidationError: before sending, on bad input.
            StoreLockTimeoutError: the user's lock was not obtained within `lock_timeout`;
                nothing was sent.
            StoreError: the store failed. If it failed after the reply arrived, the error's
                `reply` holds it (the server has recorded the turn, the store has not).
            StoreConflictError: the lock expired during the turn and another worker saved
                first; `reply` holds this turn's reply, which was not stored.
            UnconfirmedStartError: the user's first message has an unknown outcome; sending
                again could open a second server conversation. See `start_over()`.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`).
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        check_turn(text, context, metadata)  # bad input fails before the lock is taken
        self._client.config.call(options)
        store, user_key = self._store, self._user_key
        async with store.lock(user_key, ttl=self._lock_ttl, timeout=self._lock_timeout):
            record = await store.load(user_key)
            replaces = record.revision if record else None
            conversation = self._resume(record)
            try:
                reply = await conversation.say(text, context=context, metadata=metadata, **options)
            except QuickchatError as exc:
                if exc.outcome_unknown and conversation.unconfirmed:
                    await self._keep_unconfirmed(conversation, replaces=replaces)
                raise
            await self._save(conversation, replaces=replaces, reply=reply)
        logger.debug(
            "Saved turn %d of user key %r (conv_id %s).",
            reply.ord_number or 0,
            user_key,
            reply.conv_id,
        )
        return reply

    async def reload(self) -> None:
        """Load the user's latest record, to see turns that other workers saved.

        Raises:
            StoreError: the store failed, or the record is unreadable.
            ValidationError: `kb_topic` was given, but the stored conversation started without
                one (Quickchat requires it on every request, so it cannot be added).
        """
        record = await self._store.load(self._user_key)
        self._conversation = self._resume(record)

    async def start_over(self) -> None:
        """Accept that the user's unconfirmed first message is lost, so the next turn can start.

        After a first message with an unknown outcome, `say()` raises `UnconfirmedStartError`
        rather than open a second server conversation silently (the first may exist, with a
        conv_id that never arrived). This lifts that for every worker, under the user's lock.

        Raises:
            StoreLockTimeoutError: the user's lock was not obtained within `lock_timeout`.
            StoreError: the store failed.
        """
        store, user_key = self._store, self._user_key
        async with store.lock(user_key, ttl=self._lock_ttl, timeout=self._lock_timeout):
            record = await store.load(user_key)
            conversation = self._resume(record)
            if record is None or conversation.conv_id is not None:
                self._conversation = conversation
                return
            conversation.start_over()
            await self._save(conversation, replaces=record.revision, reply=None)

    async def forget(self) -> None:
        """Delete the user's stored conversation; the next `say()` starts a new one.

        The old conversation stays on Quickchat's side (its Inbox); only the link between the
        user key and its conv_id is removed, under the user's lock.

        Raises:
            StoreLockTimeoutError: the user's lock was not obtained within `lock_timeout`.
            StoreError: the store failed.
        """
        async with self._store.lock(self._user_key, ttl=self._lock_ttl, timeout=self._lock_timeout):
            await self._store.delete(self._user_key)
        self._conversation = self._start()

    # --- internals ----------------------------------------------------------------------------

    def _start(self) -> Conversation:
        return _new_conversation(self._client, self._options)

    def _resume(self, record: StoreRecord | None) -> Conversation:
        """The conversation in `record` with this object's settings applied; a new one if None."""
        if record is None:
            return self._start()
        return _resumed(self._client, self._user_key, self._options, record)

    async def _save(
        self, conversation: Conversation, *, replaces: str | None, reply: Reply | None
    ) -> None:
        """Save the conversation over revision `replaces`, and make it this object's state.

        Shielded from cancellation: once the server has answered, the store must catch up.
        """
        user_key = self._user_key
        try:
            record = StoreRecord(
                encode_record(
                    user_key=user_key,
                    scenario_id=self._client.scenario_id,
                    conversation=conversation.snapshot(),
                ),
                new_revision(),
            )
            await run_to_completion(self._save_within_deadline, record, replaces)
        except StoreError as exc:
            exc.reply = reply
            raise
        self._conversation = conversation

    async def _save_within_deadline(self, record: StoreRecord, replaces: str | None) -> None:
        user_key = self._user_key
        with anyio.move_on_after(_SAVE_DEADLINE) as scope:
            await self._store.save(user_key, record, replaces=replaces)
        if scope.cancelled_caught:
            raise StoreError(
                f"Saving the turn of user key {user_key!r} took over {_SAVE_DEADLINE:g} s; it "
                "was not stored (the reply, if one arrived, is in .reply)."
            )

    async def _keep_unconfirmed(self, conversation: Conversation, *, replaces: str | None) -> None:
        """Save a turn with an unknown outcome; the turn's own error is what the caller sees."""
        try:
            await self._save(conversation, replaces=replaces, reply=None)
        except StoreError as exc:
            logger.warning(
                "Could not store the unconfirmed turn of user key %r: %s. The next turn will "
                "not know that this message may have reached Quickchat.",
                self._user_key,
                exc.message,
            )


def _new_conversation(client: AsyncSender, options: StoredOptions) -> Conversation:
    return Conversation(
        client,
        kb_topic=options.kb_topic,
        metadata=options.metadata,
        max_history=options.max_history,
    )


def _resumed(
    client: AsyncSender, user_key: str, options: StoredOptions, record: StoreRecord
) -> Conversation:
    """The conversation a record holds, with the options in force now applied.

    Raises:
        StoreError: the record is another AI Agent's, or unreadable.
        ValidationError: the options cannot apply (kb_topic added to a conversation without
            one, more than 5 metadata keys).
    """
    decoded = decode_record(record.data, user_key=user_key)
    if decoded.scenario_id != client.scenario_id:
        raise StoreError(
            f"The stored conversation of user key {user_key!r} belongs to AI Agent "
            f"{decoded.scenario_id!r}, but this client talks to {client.scenario_id!r}. Use "
            "one store (or Redis prefix) per AI Agent, or forget() the old conversation."
        )
    snapshot = decoded.conversation
    snapshot["max_history"] = options.max_history  # the bound in force now trims on load
    try:
        conversation = Conversation.from_snapshot(client, snapshot)
    except ValidationError as exc:
        raise StoreError(
            f"The stored conversation of user key {user_key!r} is unreadable: {exc.message}"
        ) from exc
    if options.metadata is not None and options.metadata != conversation.metadata:
        snapshot["metadata"] = dict(options.metadata)
        conversation = Conversation.from_snapshot(client, snapshot)  # > 5 keys: ValidationError
    if options.kb_topic is not None:
        conversation.kb_topic = options.kb_topic  # its value may change; it cannot appear
    return conversation
