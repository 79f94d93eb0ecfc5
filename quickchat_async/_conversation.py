"""`Conversation`: the session object that remembers conv_id, kb_topic, metadata and history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

from ._config import CallOptions
from ._exceptions import QuickchatError
from ._loops import TurnLock
from ._models import Reply, Turn
from ._sender import AsyncSender
from ._session import Session
from ._snapshot import session_from_snapshot, snapshot_of
from ._types import JSONValue
from ._validation import check_context, check_metadata, check_text
from ._wire import encode_turn


__all__ = ["Conversation"]


class Conversation:
    """A conversation with the AI Agent, created by `AsyncQuickchat.conversation()` or `.resume()`.

    The first reply's `conv_id` is kept and sent with every later message. `kb_topic`, once set,
    goes out on every request, as Quickchat requires for the Knowledge Base filter to apply.
    Turns are sent one at a time, in call order. A conversation can move from one event loop
    to the next (`asyncio.run()` per turn) with its state; turns from two event loops at once
    (two threads) are refused with `EventLoopError`.

    A turn that fails before the server can have seen it, or is cancelled, leaves the
    conversation as it was. A turn whose reply never arrived although the server may have
    recorded the message (`outcome_unknown` errors) is kept in `history` as `UNCONFIRMED`; the
    next reply's `ord_number` settles it as `LANDED` or `NOT_LANDED`. A cancelled turn may have
    reached the server all the same; the turns still unconfirmed then stay so, since the
    numbers no longer tell.

    Args:
        client: the client to talk through.
        conv_id: an existing conversation to continue; None starts a new one.
        kb_topic: the Knowledge Base topic, sent on every request.
        metadata: `client_metadata` for every message (with kb_topic, at most 5 keys).
        max_history: keep only the last N turns in `history` (None keeps all).

    Raises:
        ValidationError: on bad arguments.
    """

    __slots__ = ("_client", "_lock", "_session")

    def __init__(
        self,
        client: AsyncSender,
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
        # One turn at a time, in call order, on whichever event loop runs it. A free lock is
        # taken with no await and no loop check: 3.3k instructions a turn, against 16k for
        # `async with anyio.Lock(fast_acquire=True)` (callgrind; 3% of a turn on aiohttp).
        self._lock = TurnLock()

    @classmethod
    def from_snapshot(cls, client: AsyncSender, snapshot: object) -> Conversation:
        """Rebuild a conversation from `snapshot()`; use `AsyncQuickchat.resume()`.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        conversation = cls(client)
        conversation._session = session_from_snapshot(snapshot)
        return conversation

    # --- state --------------------------------------------------------------------------------

    @property
    def client(self) -> AsyncSender:
        """The client this conversation talks through."""
        return self._client

    @property
    def conv_id(self) -> str | None:
        """The server's conversation ID: None until the first reply."""
        return self._session.conv_id

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic sent with every request, if any."""
        return self._session.kb_topic

    @kb_topic.setter
    def kb_topic(self, value: str | None) -> None:
        """Change the topic for the next turns.

        Quickchat applies the filter only if `kb_topic` is on every request of a conversation,
        so a started conversation cannot gain or lose one; its value may change freely.
        """
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
            return "<Conversation (not configured)>"
        topic = f" kb_topic={session.kb_topic!r}" if session.kb_topic is not None else ""
        return f"<Conversation conv_id={session.conv_id!r}{topic} turns={len(session.history)}>"

    # --- talking ------------------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        context: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        **options: Unpack[CallOptions],
    ) -> Reply:
        """Send a message in this conversation and return the reply.

        Args:
            text: the user's message.
            context: `message_context` for this message: extra context for the AI, at most 1000
                characters.
            metadata: `client_metadata` for this message only, merged over the conversation's.
            **options: per-call `timeout`, `max_retries`, `deadline`, `extra_headers` and
                `extra_body`, for this turn only (see `CallOptions`). The deadline counts from
                when the turn gets its place in the conversation.

        Raises:
            ValidationError: before sending, on bad input (including more than 5 metadata keys
                once merged with the conversation's and kb_topic).
            UnconfirmedStartError: the first message's outcome is unknown (see `start_over`).
            EventLoopError: a turn of this conversation is running on an event loop of another
                thread.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`).
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        check_text(text)
        check_context(context)
        turn_metadata = check_metadata(metadata) if metadata is not None else None
        client = self._client
        call = client.config.call(options)
        # A turn retried after a failure with an unknown outcome may be recorded twice, and
        # settling pending turns by the numbers must then not trust them.
        retries_ambiguous = client.config.retry_ambiguous
        lock = self._lock
        waiter = lock.take()
        if waiter is not None:
            await lock.wait(waiter)
        try:
            session = self._session
            turn = session.begin(text, context=context, turn_metadata=turn_metadata)
            try:
                request = encode_turn(
                    client.config,
                    call,
                    text=turn.text,
                    conv_id=turn.conv_id,
                    client_metadata=turn.client_metadata,
                    message_context=turn.context,
                )
                reply = await client.send(request, conv_id=turn.conv_id, call=call)
            except QuickchatError as exc:
                session.fail(turn, exc, may_repeat=call.max_retries > 0 and retries_ambiguous)
                raise
            except BaseException:
                session.abandon(turn)
                raise
            # No await from here on: the turn is committed whole, or (on error or
            # cancellation above) not at all.
            session.confirm(turn, reply, may_repeat=reply.attempts > 1 and retries_ambiguous)
            return reply
        finally:
            lock.release()

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

        Store it (a database, a file, Redis) and give it to `AsyncQuickchat.resume()` to go on.
        """
        return snapshot_of(self._session)
