"""Frozen values: the Agent's `Reply`, a `Turn` of a conversation, and an `HTTPResponse`."""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Mapping

import attrs

from ._html import html_to_text
from ._types import JSONValue


__all__ = ["HTTPResponse", "Reply", "Turn", "TurnStatus", "html_to_text"]


def _empty() -> dict[str, JSONValue]:
    return {}


@attrs.frozen(slots=True)
class Reply:
    """The AI Agent's answer to one message.

    Attributes:
        conv_id: the conversation the reply belongs to. When the server leaves it out (the legacy
            flavor does on continuations), it is the conv_id the request carried.
        html: the reply exactly as the server sent it; it may contain HTML such as `<br>`.
        ord_number: the reply's sequential number within the conversation, when sent.
        src: the server's internal source indicator, when sent.
        raw: the whole decoded JSON body.
        attempts: how many attempts the turn took (1 unless it was retried).
        elapsed: seconds the whole turn took, retries and waits included.
    """

    conv_id: str
    html: str
    ord_number: int | None = None
    src: int | None = None
    raw: Mapping[str, JSONValue] = attrs.field(factory=_empty, eq=False, repr=False)
    attempts: int = attrs.field(default=1, eq=False, repr=False)
    elapsed: float = attrs.field(default=0.0, eq=False, repr=False)

    @functools.cached_property
    def text(self) -> str:
        """The reply as plain text: `<br>` is a newline, tags are dropped, entities unescaped."""
        return html_to_text(self.html)

    def __str__(self) -> str:
        return self.text


class TurnStatus(str, enum.Enum):
    """What is known of a turn's message on the server.

    The Chat endpoint has no idempotency key, so a message whose reply never arrived (a dropped
    connection, a read timeout, a 5xx) may or may not have been recorded. Such a turn is kept as
    `UNCONFIRMED`; the next reply's `ord_number` then tells whether it landed.
    """

    #: The reply arrived.
    CONFIRMED = "confirmed"
    #: Sent, but no reply came back: not yet known whether the server recorded it.
    UNCONFIRMED = "unconfirmed"
    #: No reply came back, but a later reply's ord_number shows the server recorded it.
    LANDED = "landed"
    #: No reply came back, and a later reply's ord_number shows the server never recorded it.
    NOT_LANDED = "not_landed"


@attrs.frozen(slots=True)
class Turn:
    """One exchange of a conversation: what was sent, and what came back.

    Most turns are `CONFIRMED` and carry the Agent's `reply`. A turn whose reply never arrived
    although the message may have reached the server is kept with another `status` and no
    reply; see `TurnStatus`.

    Attributes:
        text: the user's message.
        reply: the Agent's reply; None unless the status is `CONFIRMED`.
        sent_at: when the SDK started sending the message (UTC).
        received_at: when the reply arrived, or the failure was seen (UTC).
        context: the `message_context` sent with it, if any.
        metadata: the `client_metadata` exactly as sent (conversation metadata, the turn's own
            metadata and `kb_topic`).
        status: what is known of the message on the server.
        error: for a turn without a reply, the error that was raised (type and message).
    """

    text: str
    reply: Reply | None
    sent_at: dt.datetime
    received_at: dt.datetime
    context: str | None = None
    metadata: Mapping[str, JSONValue] = attrs.field(factory=_empty)
    status: TurnStatus = TurnStatus.CONFIRMED
    error: str | None = None

    @property
    def kb_topic(self) -> str | None:
        """The Knowledge Base topic this turn was sent with, if any."""
        topic = self.metadata.get("kb_topic")
        return topic if isinstance(topic, str) else None

    @property
    def landed(self) -> bool | None:
        """Whether the server recorded the message: True, False, or None while unknown."""
        if self.status is TurnStatus.UNCONFIRMED:
            return None
        return self.status is not TurnStatus.NOT_LANDED


@attrs.frozen(slots=True, repr=False)
class HTTPResponse:
    """An HTTP response with its body read (up to the limit).

    Attributes:
        status_code: the HTTP status.
        headers: the response headers; lookups must be case-insensitive.
        content: the body, or its first `max_response_bytes` when `truncated`.
        truncated: True when the body was longer than the SDK will read.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes = attrs.field(repr=False)  # a server may echo a credential
    truncated: bool = False

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<HTTPResponse [{self.status_code}] {len(self.content)} bytes>"
