"""`Conversation`: the session object that remembers conv_id, kb_topic, metadata and history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

from ._config import CallOptions
from ._conversation_base import ConversationBase
from ._loops import TurnLock
from ._models import Reply
from ._sender import AsyncSender
from ._types import JSONValue
from ._validation import check_turn


__all__ = ["Conversation"]


class Conversation(ConversationBase[AsyncSender]):
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

    __slots__ = ("_lock",)

    def __init__(
        self,
        client: AsyncSender,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        super().__init__(
            client, conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )
        # One turn at a time, in call order, on whichever event loop runs it. A free lock is
        # taken with no await and no loop check: 3.3k instructions a turn, against 16k for
        # `async with anyio.Lock(fast_acquire=True)` (callgrind; 3% of a turn on aiohttp).
        self._lock = TurnLock()

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
            APIConnectionError: no usable response (see `outcome_unknown`); `APITimeoutError`
                when an attempt or the whole turn (`deadline`) ran out of time.
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        turn_metadata = check_turn(text, context, metadata)
        client = self._client
        call = client.config.call(options)
        lock = self._lock
        waiter = lock.take()
        if waiter is not None:
            await lock.wait(waiter)
        try:
            with self._session.turn(
                text, context=context, turn_metadata=turn_metadata, config=client.config, call=call
            ) as turn:
                reply = await client.send(turn.request, conv_id=turn.conv_id, call=call)
                # No await from here on: the turn is committed whole, or (on error or
                # cancellation above) not at all.
                turn.confirm(reply)
            return reply
        finally:
            lock.release()
