"""The JSON form of a conversation (`snapshot()`), written and read in one place.

A snapshot holds what a `Session` remembers and never a credential (the client keeps those),
with a kind and a format version, so it can move between processes, between the async and the
blocking client, and into a store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final, cast

from ._exceptions import ValidationError
from ._models import Reply, Turn, TurnStatus
from ._session import Session
from ._types import JSONValue


__all__ = ["SNAPSHOT_VERSION", "session_from_snapshot", "snapshot_of"]

#: The format version written into snapshots; `resume()` reads this version and older ones.
SNAPSHOT_VERSION: Final = 1
_SNAPSHOT_KIND: Final = "quickchat-async/conversation"
_UTC: Final = dt.UTC


def snapshot_of(session: Session) -> dict[str, JSONValue]:
    """The session's state as a JSON-serialisable dict, without any credential.

    A turn in flight is kept as unconfirmed: its message may already be on the server, and a
    conversation resumed from the snapshot must not open a second server conversation (nor
    count the message as never sent). Since the turn may still go on in this process, and be
    retried, the next reply of the resumed conversation never claims that it landed.
    """
    history, unconfirmed = session.history, session.unconfirmed
    may_repeat = session.pending_may_repeat
    in_flight = session.in_flight_turn()
    if in_flight is not None:
        history, unconfirmed, may_repeat = (*history, in_flight), (*unconfirmed, in_flight), True
    snapshot: dict[str, JSONValue] = {
        "kind": _SNAPSHOT_KIND,
        "version": SNAPSHOT_VERSION,
        "conv_id": session.conv_id,
        "kb_topic": session.kb_topic,
        "metadata": dict(session.metadata),
        "max_history": session.max_history,
        "history": [_turn_to_json(turn) for turn in history],
        "unconfirmed": [_turn_to_json(turn) for turn in unconfirmed],
        "last_ord_number": session.last_ord,
    }
    if may_repeat:  # written only when set: older SDKs ignore it, and read no such turns
        snapshot["unconfirmed_may_repeat"] = True
    return snapshot


def session_from_snapshot(snapshot: object) -> Session:
    """Rebuild a session from `snapshot_of()`.

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
    session = Session(
        conv_id=_optional_str(data, "conv_id"),
        kb_topic=_optional_str(data, "kb_topic"),
        metadata=_mapping(data.get("metadata"), "metadata"),
        max_history=_optional_int(data, "max_history"),
    )
    history = data.get("history")
    if not isinstance(history, list):
        raise ValidationError("Snapshot field 'history' must be a list.")
    unconfirmed = data.get("unconfirmed", [])
    if not isinstance(unconfirmed, list):
        raise ValidationError("Snapshot field 'unconfirmed' must be a list.")
    session.restore(
        [_turn_from_json(item) for item in history],
        [_turn_from_json(item) for item in unconfirmed],
        _optional_int(data, "last_ord_number"),
        may_repeat=data.get("unconfirmed_may_repeat") is True,
    )
    return session


# --- turns -------------------------------------------------------------------------------------


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
