"""`Conversation`: the session object that remembers conv_id, kb_topic, metadata and history."""

# pyright: reportPrivateUsage=false
# ruff: noqa: SLF001
# The conversation drives its client's internal request methods; the two are one unit.

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, cast

import anyio

from ._exceptions import ValidationError
from ._models import JSONValue, Reply, Turn
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


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


class Conversation:
    """A conversation with the AI Agent, created by `AsyncQuickchat.conversation()` or `.resume()`.

    The first reply's `conv_id` is kept and sent with every later message. `kb_topic`, once set,
    goes out on every request, as Quickchat requires for the Knowledge Base filter to apply.
    Turns are sent one at a time, in call order; history grows only when a turn succeeds, so a
    failed or cancelled `say()` leaves the conversation as it was.
    """

    __slots__ = (
        "_client",
        "_conv_id",
        "_history",
        "_kb_topic",
        "_lock",
        "_max_history",
        "_metadata",
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
        # Created on the first say(): an idle conversation stays small, and the lock binds to
        # the event loop that uses it.
        self._lock: anyio.Lock | None = None

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
        """The confirmed turns, oldest first (the last `max_history` of them, if bounded)."""
        return tuple(self._history)

    @property
    def max_history(self) -> int | None:
        """How many turns `history` keeps (None: all)."""
        return self._max_history

    def _started(self) -> bool:
        """Whether the server may already know this conversation's first request."""
        return self._conv_id is not None or (self._lock is not None and self._lock.locked())

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
        if self._lock is None:
            self._lock = anyio.Lock(fast_acquire=True)
        async with self._lock:
            client_metadata = self._client_metadata(turn_metadata)
            conv_id = self._conv_id
            client = self._client
            request = client._request(text, conv_id, client_metadata, context)
            sent_at = _now()
            reply = await client._exchange(request, conv_id)
            # No await from here on: the turn is committed whole, or (on error or
            # cancellation above) not at all.
            self._conv_id = reply.conv_id
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

    def _client_metadata(self, turn_metadata: dict[str, JSONValue] | None) -> dict[str, JSONValue]:
        """The conversation's metadata, the turn's over it, then kb_topic; at most 5 keys."""
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
        return conversation


# --- snapshot encoding ---------------------------------------------------------------------------


def _turn_to_json(turn: Turn) -> dict[str, JSONValue]:
    reply = turn.reply
    return {
        "text": turn.text,
        "context": turn.context,
        "metadata": dict(turn.metadata),
        "sent_at": turn.sent_at.isoformat(),
        "received_at": turn.received_at.isoformat(),
        "reply": {
            "conv_id": reply.conv_id,
            "html": reply.html,
            "ord_number": reply.ord_number,
            "src": reply.src,
            "raw": dict(reply.raw),
        },
    }


def _turn_from_json(item: object) -> Turn:
    data = _mapping(item, "history item")
    reply = _mapping(data.get("reply"), "history reply")
    return Turn(
        text=_str(data, "text"),
        context=_optional_str(data, "context"),
        metadata=_mapping(data.get("metadata"), "history metadata"),
        sent_at=_time(data, "sent_at"),
        received_at=_time(data, "received_at"),
        reply=Reply(
            conv_id=_str(reply, "conv_id"),
            html=_str(reply, "html"),
            ord_number=_optional_int(reply, "ord_number"),
            src=_optional_int(reply, "src"),
            raw=_mapping(reply.get("raw"), "history raw reply"),
        ),
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
