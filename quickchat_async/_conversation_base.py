"""What the async and the blocking conversation share: the session as its users see it.

A conversation is a `Session` (the rules, with no I/O), the client it talks through, and a turn
lock. Its state (conv_id, kb_topic, metadata, history, unconfirmed turns), `start_over()` and
`snapshot()` are the session's, so they are here once; `Conversation` and `SyncConversation` add
only `say()`, each with its own lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from ._models import Turn
from ._session import Session
from ._snapshot import session_from_snapshot, snapshot_of
from ._types import JSONValue


if TYPE_CHECKING:
    from typing import Self

__all__ = ["ConversationBase"]

_ClientT = TypeVar("_ClientT")


class ConversationBase(Generic[_ClientT]):
    """A conversation's client and session; see `Conversation` and `SyncConversation`."""

    __slots__ = ("_client", "_session")

    def __init__(
        self,
        client: _ClientT,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        self._client = client
        self._session = Session(
            conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )

    @classmethod
    def from_snapshot(cls, client: _ClientT, snapshot: object) -> Self:
        """Rebuild a conversation from `snapshot()`; use the client's `resume()`.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        conversation = cls(client)
        conversation._session = session_from_snapshot(snapshot)
        return conversation

    # --- state --------------------------------------------------------------------------------

    @property
    def client(self) -> _ClientT:
        """The client this conversation talks through."""
        return self._client

    @property
    def conv_id(self) -> str | None:
        """The server's conversation ID: None until the first reply."""
        return self._session.conv_id

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic sent with every request, if any.

        Quickchat applies the filter only if `kb_topic` is on every request of a conversation,
        so a started conversation cannot gain or lose one (a `ValidationError` says so); its
        value may change freely between turns.
        """
        return self._session.kb_topic

    @kb_topic.setter
    def kb_topic(self, value: str | None) -> None:
        self._session.set_kb_topic(value)

    @property
    def metadata(self) -> Mapping[str, JSONValue]:
        """The `client_metadata` sent with every message (kb_topic aside), read-only."""
        return self._session.metadata

    @property
    def history(self) -> tuple[Turn, ...]:
        """The turns, oldest first (the last `max_history` of them, if bounded).

        Failed turns that cannot have reached the server are not in it; turns whose outcome was
        unknown are, with their `status`.
        """
        return self._session.history

    @property
    def unconfirmed(self) -> tuple[Turn, ...]:
        """Turns since the last reply whose messages may or may not have reached the server."""
        return self._session.unconfirmed

    @property
    def max_history(self) -> int | None:
        """How many turns `history` keeps (None: all)."""
        return self._session.max_history

    def __repr__(self) -> str:
        session = getattr(self, "_session", None)
        if session is None:  # shown in the traceback of a failed __init__
            return f"<{type(self).__name__} (not configured)>"
        topic = f" kb_topic={session.kb_topic!r}" if session.kb_topic is not None else ""
        return (
            f"<{type(self).__name__} conv_id={session.conv_id!r}{topic} "
            f"turns={len(session.history)}>"
        )

    def start_over(self) -> None:
        """Accept that the unconfirmed first message is lost to this conversation.

        After a first turn with an unknown outcome, `say()` raises `UnconfirmedStartError`
        rather than open a second server conversation silently. Calling this lets the next
        `say()` start a new one. The unconfirmed turn stays in `history`.
        """
        self._session.start_over()

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, JSONValue]:
        """The conversation's state as a JSON-serialisable dict, without any credential.

        Store it (a database, a file, Redis) and give it to the client's `resume()` to go on,
        in this process or another, with the async client or the blocking one.
        """
        return snapshot_of(self._session)
