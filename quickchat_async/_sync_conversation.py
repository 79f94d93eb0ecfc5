"""`SyncConversation`: the blocking twin of `Conversation`, on the same session rules."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Unpack

from ._config import CallOptions
from ._conversation_base import ConversationBase
from ._models import Reply
from ._sync_sender import SyncSender
from ._types import JSONValue
from ._validation import check_turn


__all__ = ["SyncConversation"]


class SyncConversation(ConversationBase[SyncSender]):
    """A conversation of the blocking client, created by `Quickchat.conversation()` or `.resume()`.

    It behaves as `Conversation` does, through the same session rules: the first reply's
    `conv_id` is kept, `kb_topic` goes out on every request, failed turns whose message may have
    landed are kept as `UNCONFIRMED` and settled by the next reply, and `snapshot()` writes the
    same format (a snapshot moves between the async and the blocking client). Turns are sent one
    at a time across threads: two threads' first messages open one server conversation.

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
        client: SyncSender,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        super().__init__(
            client, conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )
        # One turn at a time across threads (greenlets, under gevent's monkey-patching).
        self._lock = threading.Lock()

    def say(
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
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`); `APITimeoutError`
                when an attempt or the whole turn (`deadline`) ran out of time.
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        turn_metadata = check_turn(text, context, metadata)
        client = self._client
        call = client.config.call(options)
        with (
            self._lock,
            self._session.turn(
                text, context=context, turn_metadata=turn_metadata, config=client.config, call=call
            ) as turn,
        ):
            reply = client.send(turn.request, conv_id=turn.conv_id, call=call)
            turn.confirm(reply)
        return reply
