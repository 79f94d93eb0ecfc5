"""`Conversation`: the session object that remembers conv_id, kb_topic, metadata and history."""

# pyright: reportPrivateUsage=false
# ruff: noqa: SLF001
# The conversation drives its client's internal request methods; the two are one unit.

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, cast

import attrs

from ._exceptions import QuickchatError, UnconfirmedStartError, ValidationError
from ._models import JSONValue, Reply, Turn, TurnStatus
from ._slots import Slots
from ._validation import (
    check_context,
    check_conv_id,
    check_count,
    check_kb_topic,
    check_metadata,
    check_metadata_size,
    check_text,
)


if TYPE_CHECKING:
    from ._client import AsyncQuickchat

__all__ = ["SNAPSHOT_VERSION", "Conversation"]

#: The format version written into snapshots; `resume()` reads this version and older ones.
SNAPSHOT_VERSION: Final = 1
_SNAPSHOT_KIND: Final = "quickchat-async/conversation"
_UTC: Final = dt.timezone.utc
_NO_METADATA: Final[Mapping[str, JSONValue]] = MappingProxyType({})

logger = logging.getLogger("quickchat_async")


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


class Conversation:
    """A conversation with the AI Agent, created by `AsyncQuickchat.conversation()` or `.resume()`.

    The first reply's `conv_id` is kept and sent with every later message. `kb_topic`, once set,
    goes out on every request, as Quickchat requires for the Knowledge Base filter to apply.
    Turns are sent one at a time, in call order.

    A turn that fails before the server can have seen it, or is cancelled, leaves the
    conversation as it was. A turn whose reply never arrived although the server may have
    recorded the message (`outcome_unknown` errors) is kept in `history` as `UNCONFIRMED`; the
    next reply's `ord_number` settles it as `LANDED` or `NOT_LANDED`. A cancelled turn may have
    reached the server all the same; the turns still unconfirmed then stay so, since the
    numbers no longer tell.
    """

    __slots__ = (
        "_client",
        "_conv_id",
        "_history",
        "_kb_topic",
        "_last_ord",
        "_lock",
        "_max_history",
        "_metadata",
        "_pending",
    )

    def __init__(
        self,
        client: AsyncQuickchat,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        check_conv_id(conv_id)
        check_count(max_history, name="max_history", minimum=0, optional=True)
        self._client = client
        self._conv_id = conv_id
        self._kb_topic = check_kb_topic(kb_topic)
        self._metadata = check_metadata(metadata)
        check_metadata_size(
            {**self._metadata, "kb_topic": ""} if kb_topic is not None else self._metadata,
            name="metadata plus kb_topic",
        )
        self._max_history = max_history
        self._history: list[Turn] = []
        # Unconfirmed turns since the last reply, and that reply's ord_number: together they
        # tell, at the next reply, whether those messages landed.
        self._pending: tuple[Turn, ...] = ()
        self._last_ord: int | None = None
        # Created on the first say(): an idle conversation stays small, and the lock binds to
        # the event loop that uses it.
        self._lock: Slots | None = None

    # --- state --------------------------------------------------------------------------------

    @property
    def client(self) -> AsyncQuickchat:
        """The client this conversation talks through."""
        return self._client

    @property
    def conv_id(self) -> str | None:
        """The server's conversation ID: None until the first reply."""
        return self._conv_id

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic sent with every request, if any."""
        return self._kb_topic

    @kb_topic.setter
    def kb_topic(self, value: str | None) -> None:
        """Change the topic for the next turns.

        Quickchat applies the filter only if `kb_topic` is on every request of a conversation,
        so a started conversation cannot gain or lose one; its value may change freely.
        """
        value = check_kb_topic(value)
        if self._started() and (value is None) != (self._kb_topic is None):
            if value is None:
                raise ValidationError(
                    "kb_topic cannot be removed from a started conversation: Quickchat filters "
                    "the Knowledge Base only if kb_topic is on every request. Change its value, "
                    "or start a new conversation."
                )
            raise ValidationError(
                "kb_topic cannot be introduced after a conversation has started: Quickchat "
                "filters the Knowledge Base only if kb_topic is on every request, the first "
                "included. Start a new conversation with client.conversation(kb_topic=...)."
            )
        if value is not None:
            check_metadata_size(
                {**self._metadata, "kb_topic": value}, name="metadata plus kb_topic"
            )
        self._kb_topic = value

    @property
    def metadata(self) -> Mapping[str, JSONValue]:
        """The `client_metadata` sent with every message (kb_topic aside), read-only."""
        return MappingProxyType(self._metadata)

    @property
    def history(self) -> tuple[Turn, ...]:
        """The turns, oldest first (the last `max_history` of them, if bounded).

        Failed turns that cannot have reached the server are not in it; turns whose outcome was
        unknown are, with their `status`.
        """
        return tuple(self._history)

    @property
    def unconfirmed(self) -> tuple[Turn, ...]:
        """Turns since the last reply whose messages may or may not have reached the server."""
        return self._pending

    @property
    def max_history(self) -> int | None:
        """How many turns `history` keeps (None: all)."""
        return self._max_history

    def _started(self) -> bool:
        """Whether the server may already know this conversation's first request."""
        return self._conv_id is not None or (self._lock is not None and self._lock.in_use > 0)

    def __repr__(self) -> str:
        topic = f" kb_topic={self._kb_topic!r}" if self._kb_topic is not None else ""
        return f"<Conversation conv_id={self._conv_id!r}{topic} turns={len(self._history)}>"

    # --- talking ------------------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        context: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Reply:
        """Send a message in this conversation and return the reply.

        Args:
            text: the user's message.
            context: `message_context` for this message: extra context for the AI, at most 1000
                characters.
            metadata: `client_metadata` for this message only, merged over the conversation's.

        Raises:
            ValidationError: before sending, on bad input (including more than 5 metadata keys
                once merged with the conversation's and kb_topic).
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`).
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        check_text(text)
        check_context(context)
        turn_metadata = check_metadata(metadata) if metadata is not None else None
        lock = self._lock
        if lock is None:
            lock = self._lock = Slots(1)
        if not lock.take_nowait():  # one turn at a time, in call order
            await lock.take()
        try:
            conv_id = self._conv_id
            if conv_id is None and self._pending:
                raise UnconfirmedStartError(
                    "The first message of this conversation may or may not have reached "
                    "Quickchat: its reply, and so its conv_id, never arrived. Sending again "
                    "would open a second conversation on the server. Call start_over() to "
                    "accept that, or start a new conversation."
                )
            client_metadata = self._client_metadata(turn_metadata)
            client = self._client
            request = client._request(text, conv_id, client_metadata, context)
            sent_at = _now()
            try:
                reply = await client._exchange(request, conv_id)
            except QuickchatError as exc:
                if exc.outcome_unknown:
                    self._remember(
                        Turn(
                            text=text,
                            reply=None,
                            sent_at=sent_at,
                            received_at=_now(),
                            context=context,
                            metadata=client_metadata,
                            status=TurnStatus.UNCONFIRMED,
                            error=f"{type(exc).__name__}: {exc.message}",
                        )
                    )
                raise
            except BaseException:
                # Cancelled mid-turn: the message may have reached the server, uncounted, so the
                # next reply's ord_number can no longer tell which pending turns landed.
                self._last_ord = None
                raise
            # No await from here on: the turn is committed whole, or (on error or
            # cancellation above) not at all.
            self._conv_id = reply.conv_id
            self._settle(reply.ord_number)
            self._append(
                Turn(
                    text=text,
                    reply=reply,
                    sent_at=sent_at,
                    received_at=_now(),
                    context=context,
                    metadata=client_metadata,
                )
            )
            return reply
        finally:
            lock.give()

    def start_over(self) -> None:
        """Accept that the unconfirmed first message is lost to this conversation.

        After a first turn with an unknown outcome, `say()` raises `UnconfirmedStartError`
        rather than open a second server conversation silently. Calling this lets the next
        `say()` start a new one. The unconfirmed turn stays in `history`.
        """
        if self._conv_id is None:
            self._pending = ()

    def _remember(self, turn: Turn) -> None:
        """Keep a turn whose message may have landed, to be settled by the next reply."""
        self._pending = (*self._pending, turn)
        self._append(turn)

    def _settle(self, ord_number: int | None) -> None:
        """Use a reply's ord_number to tell whether the pending turns' messages landed.

        Each turn adds two messages (the user's and the reply), so a reply numbered N after one
        numbered L means (N - L) / 2 - 1 of the pending messages landed. Only "none" and "all"
        say which ones did.
        """
        pending, last = self._pending, self._last_ord
        self._pending, self._last_ord = (), ord_number
        if not pending or ord_number is None or last is None:
            return
        landed, odd = divmod(ord_number - last, 2)
        landed -= 1
        if odd or landed not in {0, len(pending)}:
            logger.info(
                "Could not tell which of %d unconfirmed messages of conversation %s landed "
                "(ord_number %d after %d)",
                len(pending),
                self._conv_id,
                ord_number,
                last,
            )
            return
        status = TurnStatus.LANDED if landed else TurnStatus.NOT_LANDED
        logger.info(
            "%d unconfirmed message(s) of conversation %s: %s",
            len(pending),
            self._conv_id,
            status.value,
        )
        settled = {id(turn): attrs.evolve(turn, status=status) for turn in pending}
        self._history = [settled.get(id(turn), turn) for turn in self._history]

    def _client_metadata(
        self, turn_metadata: dict[str, JSONValue] | None
    ) -> Mapping[str, JSONValue]:
        """The conversation's metadata, the turn's over it, then kb_topic; at most 5 keys."""
        if not turn_metadata and not self._metadata and self._kb_topic is None:
            return _NO_METADATA  # most turns: one shared, read-only empty mapping
        merged = {**self._metadata, **turn_metadata} if turn_metadata else dict(self._metadata)
        if self._kb_topic is not None:
            merged["kb_topic"] = self._kb_topic
        check_metadata_size(merged)
        return merged

    def _append(self, turn: Turn) -> None:
        history = self._history
        history.append(turn)
        if self._max_history is not None and len(history) > self._max_history:
            del history[: len(history) - self._max_history]

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, JSONValue]:
        """The conversation's state as a JSON-serialisable dict, without any credential.

        Store it (a database, a file, Redis) and give it to `AsyncQuickchat.resume()` to go on.
        """
        return {
            "kind": _SNAPSHOT_KIND,
            "version": SNAPSHOT_VERSION,
            "conv_id": self._conv_id,
            "kb_topic": self._kb_topic,
            "metadata": dict(self._metadata),
            "max_history": self._max_history,
            "history": [_turn_to_json(turn) for turn in self._history],
            "unconfirmed": [_turn_to_json(turn) for turn in self._pending],
            "last_ord_number": self._last_ord,
        }

    @classmethod
    def from_snapshot(cls, client: AsyncQuickchat, snapshot: object) -> Conversation:
        """Rebuild a conversation from `snapshot()`; use `AsyncQuickchat.resume()`.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        data = _mapping(snapshot, "snapshot")
        if data.get("kind") != _SNAPSHOT_KIND:
            raise ValidationError("This is not a conversation snapshot written by quickchat-async.")
        version = data.get("version")
        if type(version) is not int or version < 1:
            raise ValidationError(f"Snapshot version {version!r} is not valid.")
        if version > SNAPSHOT_VERSION:
            raise ValidationError(
                f"Snapshot format version {version} is newer than this SDK reads "
                f"({SNAPSHOT_VERSION}); upgrade quickchat-async."
            )
        conversation = cls(
            client,
            conv_id=_optional_str(data, "conv_id"),
            kb_topic=_optional_str(data, "kb_topic"),
            metadata=_mapping(data.get("metadata"), "metadata"),
            max_history=_optional_int(data, "max_history"),
        )
        history = data.get("history")
        if not isinstance(history, list):
            raise ValidationError("Snapshot field 'history' must be a list.")
        for item in history:
            conversation._append(_turn_from_json(item))
        unconfirmed = data.get("unconfirmed", [])
        if not isinstance(unconfirmed, list):
            raise ValidationError("Snapshot field 'unconfirmed' must be a list.")
        # The same turns are in history (unless trimmed): share the objects, so settling one
        # updates both.
        known = {_turn_key(turn): turn for turn in conversation._history}
        pending = [_turn_from_json(item) for item in unconfirmed]
        conversation._pending = tuple(known.get(_turn_key(turn), turn) for turn in pending)
        conversation._last_ord = _optional_int(data, "last_ord_number")
        return conversation


# --- snapshot encoding ---------------------------------------------------------------------------


def _turn_key(turn: Turn) -> tuple[str, dt.datetime]:
    return (turn.text, turn.sent_at)


def _turn_to_json(turn: Turn) -> dict[str, JSONValue]:
    reply = turn.reply
    return {
        "text": turn.text,
        "context": turn.context,
        "metadata": dict(turn.metadata),
        "sent_at": turn.sent_at.isoformat(),
        "received_at": turn.received_at.isoformat(),
        "status": turn.status.value,
        "error": turn.error,
        "reply": None
        if reply is None
        else {
            "conv_id": reply.conv_id,
            "html": reply.html,
            "ord_number": reply.ord_number,
            "src": reply.src,
            "raw": dict(reply.raw),
        },
    }


def _turn_from_json(item: object) -> Turn:
    data = _mapping(item, "history item")
    status_name = data.get("status", TurnStatus.CONFIRMED.value)
    try:
        status = TurnStatus(status_name)
    except ValueError:
        raise ValidationError(f"Snapshot turn status {status_name!r} is not known.") from None
    reply = None
    if status is TurnStatus.CONFIRMED:
        fields = _mapping(data.get("reply"), "history reply")
        reply = Reply(
            conv_id=_str(fields, "conv_id"),
            html=_str(fields, "html"),
            ord_number=_optional_int(fields, "ord_number"),
            src=_optional_int(fields, "src"),
            raw=_mapping(fields.get("raw"), "history raw reply"),
        )
    return Turn(
        text=_str(data, "text"),
        reply=reply,
        sent_at=_time(data, "sent_at"),
        received_at=_time(data, "received_at"),
        context=_optional_str(data, "context"),
        metadata=_mapping(data.get("metadata"), "history metadata"),
        status=status,
        error=_optional_str(data, "error"),
    )


def _mapping(value: object, what: str) -> dict[str, JSONValue]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"Snapshot field {what!r} must be an object.")
    items = cast("Mapping[object, JSONValue]", value).items()
    return {str(key): item for key, item in items}


def _str(data: Mapping[str, JSONValue], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"Snapshot field {key!r} must be a string.")
    return value


def _optional_str(data: Mapping[str, JSONValue], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"Snapshot field {key!r} must be a string or null.")
    return value


def _optional_int(data: Mapping[str, JSONValue], key: str) -> int | None:
    value = data.get(key)
    if value is not None and type(value) is not int:
        raise ValidationError(f"Snapshot field {key!r} must be an integer or null.")
    return value


def _time(data: Mapping[str, JSONValue], key: str) -> dt.datetime:
    value = _str(data, key)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"Snapshot field {key!r} is not an ISO 8601 time.") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=_UTC)
