"""The session rules: what a conversation remembers, and how each turn changes it. No I/O.

A `Session` is the state of one conversation (conv_id, kb_topic, metadata, history, the turns
whose outcome is unknown) and the rules of the Chat endpoint about it: the first reply's
conv_id is kept, `kb_topic` once there is sticky, at most 5 metadata keys go out, and a reply's
`ord_number` settles the turns that were left unconfirmed. A turn is `begin()`-ed, then
`confirm()`-ed, `fail()`-ed or `abandon()`-ed, each a synchronous step, so a conversation is
never half updated, whatever cancels the I/O around them. `turn()` does all of that around the
I/O as a ``with`` block (`TurnScope`): the async and the blocking conversation both send their
turns through it; `_snapshot` writes and reads the session's JSON form.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Final, NamedTuple, Self

import attrs

from ._config import Call, ClientConfig
from ._exceptions import QuickchatError, UnconfirmedStartError, ValidationError
from ._models import Reply, Turn, TurnStatus
from ._types import JSONValue
from ._validation import (
    check_conv_id,
    check_count,
    check_kb_topic,
    check_metadata,
    check_metadata_size,
)
from ._wire import ChatRequest, encode_turn


__all__ = [
    "PreparedTurn",
    "Session",
    "TurnScope",
    "settlement",
]

logger = logging.getLogger("quickchat_async")

_UTC: Final = dt.UTC
_NO_METADATA: Final[Mapping[str, JSONValue]] = MappingProxyType({})


#: The time now, in UTC (a partial: a Python function around it costs a call a turn more).
_now: Final = functools.partial(dt.datetime.now, _UTC)


class PreparedTurn(NamedTuple):
    """A turn about to be sent: exactly what goes out, and when it started."""

    text: str
    conv_id: str | None
    client_metadata: Mapping[str, JSONValue]
    context: str | None
    sent_at: dt.datetime


class TurnScope:
    """A turn under way (`Session.turn()`): the request to send, and how the turn ends.

    Use it as a ``with`` block around the I/O: send `request` (it continues `conv_id`), then
    `confirm()` the reply inside the block. Leaving the block by an SDK error keeps the turn
    as unconfirmed if its message may have landed (`Session.fail`); by anything else (a
    cancellation, KeyboardInterrupt) the turn is abandoned (`Session.abandon`). A turn that may
    be retried after a failure with an unknown outcome (`retry_ambiguous`) may be recorded
    twice, and settles the pending turns accordingly.
    """

    __slots__ = (
        "_retries_ambiguous",
        "_retry_ambiguous",
        "_session",
        "_turn",
        "conv_id",
        "request",
    )

    def __init__(
        self,
        session: Session,
        turn: PreparedTurn,
        request: ChatRequest,
        *,
        call: Call,
        retry_ambiguous: bool,
    ) -> None:
        self._session = session
        self._turn = turn
        #: The prepared POST of this turn.
        self.request = request
        #: The conversation the turn continues; None for a first message.
        self.conv_id = turn.conv_id
        self._retry_ambiguous = retry_ambiguous
        #: Whether this turn may be sent again after a failure with an unknown outcome.
        self._retries_ambiguous = retry_ambiguous and call.max_retries > 0

    def __enter__(self) -> Self:
        return self

    def confirm(self, reply: Reply) -> None:
        """The reply arrived: the turn goes into the session (see `Session.confirm`)."""
        self._session.confirm(
            self._turn, reply, may_repeat=self._retry_ambiguous and reply.attempts > 1
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, QuickchatError):
            self._session.fail(self._turn, exc, may_repeat=self._retries_ambiguous)
        else:
            self._session.abandon(self._turn)


def check_sticky_kb_topic(old: str | None, new: str | None) -> None:
    """The rule of a started conversation: its kb_topic may change, but not appear or vanish.

    Quickchat filters the Knowledge Base only if kb_topic is on every request of a
    conversation.

    Raises:
        ValidationError: the topic would appear or vanish.
    """
    if new is None and old is not None:
        raise ValidationError(
            "kb_topic cannot be removed from a started conversation: Quickchat filters "
            "the Knowledge Base only if kb_topic is on every request. Change its value, "
            "or start a new conversation."
        )
    if new is not None and old is None:
        raise ValidationError(
            "kb_topic cannot be introduced after a conversation has started: Quickchat "
            "filters the Knowledge Base only if kb_topic is on every request, the first "
            "included. Start a new conversation with client.conversation(kb_topic=...)."
        )


def client_metadata(
    conversation: Mapping[str, JSONValue],
    turn: dict[str, JSONValue] | None,
    kb_topic: str | None,
) -> Mapping[str, JSONValue]:
    """What a turn sends as `client_metadata`: the conversation's, the turn's over it, kb_topic.

    Raises:
        ValidationError: more than 5 keys in all.
    """
    if not turn and not conversation and kb_topic is None:
        return _NO_METADATA  # most turns: one shared, read-only empty mapping
    merged = {**conversation, **turn} if turn else dict(conversation)
    if kb_topic is not None:
        merged["kb_topic"] = kb_topic
    check_metadata_size(merged)
    return merged


def settlement(pending: int, last: int, ord_number: int, *, may_repeat: bool) -> TurnStatus | None:
    """What a reply numbered `ord_number`, after one numbered `last`, proves of pending turns.

    Each turn adds two messages (the user's and the reply), so the difference means
    (N - L) / 2 - 1 messages were recorded in between. None of them says that no pending turn
    landed (`NOT_LANDED`). That all of them did (`LANDED`) is proven only when each can have
    been recorded at most once: a turn retried after a failure with an unknown outcome may have
    been recorded twice, and its second copy would count as another turn's. Anything else
    proves nothing (None): the turns stay unconfirmed.
    """
    landed, odd = divmod(ord_number - last, 2)
    landed -= 1
    if odd:
        return None
    if landed == 0:
        return TurnStatus.NOT_LANDED
    if landed == pending and not may_repeat:
        return TurnStatus.LANDED
    return None


class Session:
    """The state of one conversation and the rules that change it.

    Args:
        conv_id: an existing conversation to continue; None starts one at the first reply.
        kb_topic: the Knowledge Base topic, sent on every request.
        metadata: `client_metadata` for every message (kb_topic aside).
        max_history: how many turns `history` keeps (None: all).

    Raises:
        ValidationError: a bad argument, or more than 5 metadata keys with kb_topic.
    """

    __slots__ = (
        "_current",
        "_history",
        "_kb_topic",
        "_metadata",
        "_pending",
        "conv_id",
        "last_ord",
        "max_history",
        "pending_may_repeat",
    )

    def __init__(
        self,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        self.conv_id = check_conv_id(conv_id)
        self.max_history = check_count(max_history, name="max_history", minimum=0, optional=True)
        self._kb_topic = check_kb_topic(kb_topic)
        self._metadata = check_metadata(metadata)
        check_metadata_size(
            {**self._metadata, "kb_topic": ""} if kb_topic is not None else self._metadata,
            name="metadata plus kb_topic",
        )
        self._history: list[Turn] = []
        #: Unconfirmed turns since the last reply, and that reply's ord_number: together they
        #: tell, at the next reply, whether those messages landed.
        self._pending: tuple[Turn, ...] = ()
        self.last_ord: int | None = None
        #: A pending turn may have been recorded more than once (it was retried after a failure
        #: with an unknown outcome, `retry_ambiguous`): then the numbers cannot prove that all
        #: pending turns landed.
        self.pending_may_repeat = False
        #: The turn begun and not yet ended, if any: the server may already have its message.
        self._current: PreparedTurn | None = None

    # --- state --------------------------------------------------------------------------------

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic sent with every request, if any."""
        return self._kb_topic

    @property
    def metadata(self) -> Mapping[str, JSONValue]:
        """The `client_metadata` sent with every message (kb_topic aside), read-only."""
        return MappingProxyType(self._metadata)

    @property
    def history(self) -> tuple[Turn, ...]:
        """The turns, oldest first (the last `max_history` of them, if bounded)."""
        return tuple(self._history)

    @property
    def unconfirmed(self) -> tuple[Turn, ...]:
        """Turns since the last reply whose messages may or may not have reached the server."""
        return self._pending

    @property
    def in_flight(self) -> PreparedTurn | None:
        """The turn begun and not yet ended, if any: the server may already have its message."""
        return self._current

    def started(self) -> bool:
        """Whether the server may already know this conversation's first request."""
        return self.conv_id is not None or self._current is not None

    def set_kb_topic(self, value: object) -> None:
        """Change the topic for the next turns.

        Quickchat applies the filter only if `kb_topic` is on every request of a conversation,
        so a started conversation cannot gain or lose one; its value may change freely.

        Raises:
            ValidationError: a bad topic, or one that would appear or vanish mid-conversation.
        """
        topic = check_kb_topic(value)
        if self.started():
            check_sticky_kb_topic(self._kb_topic, topic)
        if topic is not None:
            check_metadata_size(
                {**self._metadata, "kb_topic": topic}, name="metadata plus kb_topic"
            )
        self._kb_topic = topic

    # --- a turn -------------------------------------------------------------------------------

    def begin(
        self, text: str, *, context: str | None, turn_metadata: dict[str, JSONValue] | None
    ) -> PreparedTurn:
        """Start a turn: what to send. The caller holds the conversation's turn lock.

        Raises:
            UnconfirmedStartError: the first message's outcome is unknown; sending again would
                open a second conversation on the server.
            ValidationError: more than 5 metadata keys once merged.
        """
        if self.conv_id is None and self._pending:
            raise UnconfirmedStartError(
                "The first message of this conversation may or may not have reached "
                "Quickchat: its reply, and so its conv_id, never arrived. Sending again "
                "would open a second conversation on the server. Call start_over() to "
                "accept that, or start a new conversation."
            )
        turn = PreparedTurn(
            text,
            self.conv_id,
            client_metadata(self._metadata, turn_metadata, self._kb_topic),
            context,
            _now(),
        )
        self._current = turn
        return turn

    def turn(
        self,
        text: str,
        *,
        context: str | None,
        turn_metadata: dict[str, JSONValue] | None,
        config: ClientConfig,
        call: Call,
    ) -> TurnScope:
        """Begin a turn (see `begin`) and encode its request with the turn's `call` settings.

        End it with the returned `TurnScope`. The caller holds the conversation's turn lock
        until the scope's block ends.

        Raises:
            UnconfirmedStartError: the first message's outcome is unknown.
            ValidationError: more than 5 metadata keys once merged, or metadata that changed
                since it was checked and is no longer JSON.
        """
        turn = self.begin(text, context=context, turn_metadata=turn_metadata)
        try:
            request = encode_turn(
                config,
                call,
                text=turn.text,
                conv_id=turn.conv_id,
                client_metadata=turn.client_metadata,
                message_context=turn.context,
            )
        except QuickchatError as exc:
            self.fail(turn, exc)
            raise
        return TurnScope(self, turn, request, call=call, retry_ambiguous=config.retry_ambiguous)

    def confirm(self, turn: PreparedTurn, reply: Reply, *, may_repeat: bool = False) -> None:
        """The reply arrived: keep its conv_id, settle pending turns, append the turn.

        `may_repeat`: an earlier attempt of this turn failed after the message may have been
        recorded, and it was sent again (`retry_ambiguous`): the server may hold it twice.
        """
        self._current = None
        self.conv_id = reply.conv_id
        if self._pending:
            self._settle(reply.ord_number, may_repeat=may_repeat)
        else:  # nearly every turn: nothing to settle
            self.last_ord = reply.ord_number
        self._append(self._turn(turn, reply=reply))

    def fail(self, turn: PreparedTurn, exc: QuickchatError, *, may_repeat: bool = False) -> None:
        """The turn raised: keep it as unconfirmed if the message may have landed.

        `may_repeat`: the turn may have been sent more than once after failures with an unknown
        outcome (`retry_ambiguous`), so the server may hold it more than once.
        """
        self._current = None
        if exc.outcome_unknown:
            self.pending_may_repeat = self.pending_may_repeat or may_repeat
            unconfirmed = self._turn(
                turn,
                status=TurnStatus.UNCONFIRMED,
                error=f"{type(exc).__name__}: {exc.message}",
            )
            self._pending = (*self._pending, unconfirmed)
            self._append(unconfirmed)

    def abandon(self, turn: PreparedTurn) -> None:  # noqa: ARG002 -- one signature per ending
        """The turn was cancelled: its message may have reached the server, uncounted.

        The next reply's ord_number can then no longer tell which pending turns landed, so
        they stay unconfirmed.
        """
        self._current = None
        self.last_ord = None

    def start_over(self) -> None:
        """Accept that the unconfirmed first message is lost to this conversation."""
        if self.conv_id is None:
            self._pending = ()
            self.pending_may_repeat = False

    # --- internals ----------------------------------------------------------------------------

    def _turn(
        self,
        turn: PreparedTurn,
        *,
        reply: Reply | None = None,
        status: TurnStatus = TurnStatus.CONFIRMED,
        error: str | None = None,
    ) -> Turn:
        return Turn(
            text=turn.text,
            reply=reply,
            sent_at=turn.sent_at,
            received_at=_now(),
            context=turn.context,
            metadata=turn.client_metadata,
            status=status,
            error=error,
        )

    def _settle(self, ord_number: int | None, *, may_repeat: bool) -> None:
        """Use a reply's ord_number to settle the pending turns (see `settlement`)."""
        pending, last = self._pending, self.last_ord
        repeated = may_repeat or self.pending_may_repeat
        self._pending, self.last_ord, self.pending_may_repeat = (), ord_number, False
        if not pending or ord_number is None or last is None:
            return
        status = settlement(len(pending), last, ord_number, may_repeat=repeated)
        if status is None:
            logger.info(
                "Could not tell which of %d unconfirmed messages of conversation %s landed "
                "(ord_number %d after %d%s)",
                len(pending),
                self.conv_id,
                ord_number,
                last,
                ", a message may have been recorded twice" if repeated else "",
            )
            return
        logger.info(
            "%d unconfirmed message(s) of conversation %s: %s",
            len(pending),
            self.conv_id,
            status.value,
        )
        settled = {id(turn): attrs.evolve(turn, status=status) for turn in pending}
        self._history = [settled.get(id(turn), turn) for turn in self._history]

    def _append(self, turn: Turn) -> None:
        history = self._history
        history.append(turn)
        if self.max_history is not None and len(history) > self.max_history:
            del history[: len(history) - self.max_history]

    # --- restoring ----------------------------------------------------------------------------

    def restore(
        self,
        history: list[Turn],
        unconfirmed: list[Turn],
        last_ord: int | None,
        *,
        may_repeat: bool = False,
    ) -> None:
        """Put back the turns of a snapshot (see `_snapshot.session_from_snapshot`)."""
        for turn in history:
            self._append(turn)
        # The same turns are in history (unless trimmed): share the objects, so settling one
        # updates both.
        known = {(turn.text, turn.sent_at): turn for turn in self._history}
        self._pending = tuple(known.get((turn.text, turn.sent_at), turn) for turn in unconfirmed)
        self.last_ord = last_ord
        self.pending_may_repeat = may_repeat and bool(self._pending)

    def in_flight_turn(self) -> Turn | None:
        """The turn in flight, as an unconfirmed turn: what a snapshot taken now keeps of it."""
        current = self._current
        if current is None:
            return None
        return self._turn(
            current,
            status=TurnStatus.UNCONFIRMED,
            error="InFlight: the turn was still waiting for its reply when the snapshot was taken",
        )
