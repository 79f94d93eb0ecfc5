"""The error tree of the SDK: every error it raises is one of these.

::

    QuickchatError
    ├── ValidationError (also ValueError): bad input, caught before anything is sent
    ├── ClientClosedError (also RuntimeError): the client was used after aclose()
    ├── EventLoopError (also RuntimeError): used from an event loop it cannot serve
    ├── UnconfirmedStartError: a conversation's first message has an unknown outcome
    ├── APIConnectionError: no usable HTTP response
    │   └── APITimeoutError (also TimeoutError)
    ├── UnexpectedResponseError: a 2xx whose body is not the documented JSON
    │   └── ResponseTooLargeError
    ├── StoreError: a conversation store failed (`reply` is set when only saving the turn failed)
    │   ├── StoreLockTimeoutError (also TimeoutError): a user key's lock was not obtained in time
    │   └── StoreConflictError: the stored conversation changed during the turn (its lock expired)
    └── APIStatusError: the server answered with an error status
        ├── BadRequestError (400)
        │   └── ConversationNotFoundError (invalid or unknown conv_id)
        ├── AuthenticationError (401, and the 400 "not authenticated")
        ├── PermissionDeniedError (403)
        ├── ScenarioNotFoundError (404)
        ├── RateLimitError (429)
        └── InternalServerError (500 and other 5xx)
            └── ServiceUnavailableError (503)

Every error says whether the server may have recorded the message (`outcome_unknown`): the Chat
endpoint has no idempotency key, so such a turn is never retried unless the user opts in.
Which status, text or transport failure becomes which error is decided in `_wire` (statuses and
server text) and beside each transport (its engine's exceptions).
"""

from __future__ import annotations

from ._models import HTTPResponse, Reply


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConversationNotFoundError",
    "EventLoopError",
    "InternalServerError",
    "PermissionDeniedError",
    "QuickchatError",
    "RateLimitError",
    "ResponseTooLargeError",
    "ScenarioNotFoundError",
    "ServiceUnavailableError",
    "StoreConflictError",
    "StoreError",
    "StoreLockTimeoutError",
    "UnconfirmedStartError",
    "UnexpectedResponseError",
    "ValidationError",
]


class QuickchatError(Exception):
    """Base class of every error this SDK raises.

    Attributes:
        outcome_unknown: True when the server may have recorded the message even though no
            reply came back (a dropped connection after sending, a read timeout, a 5xx). Such a
            turn is not retried unless the client was created with `retry_ambiguous=True`.
    """

    outcome_unknown: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ValidationError(QuickchatError, ValueError):
    """Bad input, reported before any request is sent."""


class ClientClosedError(QuickchatError, RuntimeError):
    """The client was used after `aclose()` (or after its `async with` block ended)."""


class EventLoopError(QuickchatError, RuntimeError):
    """Used from an event loop it cannot serve; nothing was sent.

    The SDK makes its own connections anew on each event loop, so a client outlives
    `asyncio.run()`, `async_to_sync` and a loop per test. It cannot do so for what the caller
    made: an `http_client` (or a `transport` instance, or a Redis client) belongs to the event
    loop it was first used on. And a conversation's turns go one at a time, in order, so one
    conversation cannot take turns from two event loops at once (two threads).
    """


class UnconfirmedStartError(QuickchatError):
    """The conversation's first message may have opened a server conversation, unknown to us.

    Its reply (and so its conv_id) never arrived. Sending again would open a second
    conversation on the server, so the SDK refuses until told to: call
    `Conversation.start_over()`, or start a new conversation.
    """


class APIConnectionError(QuickchatError):
    """No usable HTTP response: the connection failed, dropped, or the reply was cut short.

    Attributes:
        url: the URL the request was for (never contains a credential).
        outcome_unknown: False when the request cannot have reached the server (connection
            refused, connect timeout, no free connection); True when it may have.
    """

    def __init__(self, message: str, *, url: str = "", outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.url = url
        self.outcome_unknown = outcome_unknown


class APITimeoutError(APIConnectionError, TimeoutError):
    """A connect, read or overall deadline ran out."""


class UnexpectedResponseError(QuickchatError):
    """The server answered 2xx, but not with the documented JSON (`reply`, `conv_id`, ...).

    The server probably recorded the message, so `outcome_unknown` is True and the turn is not
    retried by default.

    Attributes:
        status_code: the HTTP status.
        body: the start of the body that could not be used.
    """

    outcome_unknown = True

    def __init__(self, message: str, *, status_code: int, body: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ResponseTooLargeError(UnexpectedResponseError):
    """The reply body was larger than the SDK will read (`max_response_bytes`)."""


class APIStatusError(QuickchatError):
    """The server answered with an error status.

    Attributes:
        status_code: the HTTP status.
        message: what happened and what to do, quoting the server's text.
        server_message: the server's own text, trimmed and with tags removed.
        response: the HTTP response, with headers and the (bounded) body.
    """

    def __init__(
        self, message: str, *, status_code: int, server_message: str, response: HTTPResponse
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message
        self.response = response


class BadRequestError(APIStatusError):
    """400: the server rejected the request's content."""


class ConversationNotFoundError(BadRequestError):
    """400: the conv_id is not valid or does not exist (for this scenario)."""


class AuthenticationError(APIStatusError):
    """401, or the current flavor's 400 "not authenticated": the credential was refused."""


class PermissionDeniedError(APIStatusError):
    """403: the credential is valid but may not use this scenario."""


class ScenarioNotFoundError(APIStatusError):
    """404: no AI Agent with this scenario_id for this credential."""


class RateLimitError(APIStatusError):
    """429: too many requests for this token.

    Attributes:
        retry_after: seconds the server asked to wait, when it said (`Retry-After`).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str,
        response: HTTPResponse,
        retry_after: float | None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, server_message=server_message, response=response
        )
        self.retry_after = retry_after


class InternalServerError(APIStatusError):
    """500 and other 5xx: a failure on the server's side (or a proxy in front of it).

    The server may have recorded the message before failing, so `outcome_unknown` is True.
    """

    outcome_unknown = True


class ServiceUnavailableError(InternalServerError):
    """503: the service is overloaded or in maintenance; the message was not processed.

    Attributes:
        retry_after: seconds the server asked to wait, when it said (`Retry-After`).
    """

    outcome_unknown = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str,
        response: HTTPResponse,
        retry_after: float | None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, server_message=server_message, response=response
        )
        self.retry_after = retry_after


class StoreError(QuickchatError):
    """A conversation store failed: its backend is unreachable, or a stored record is unreadable.

    Attributes:
        reply: the Agent's reply when the turn itself succeeded and only saving it failed (the
            server has recorded the message); None when nothing was sent.
    """

    def __init__(self, message: str, *, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class StoreLockTimeoutError(StoreError, TimeoutError):
    """The lock on a user key was not obtained in time; the message was not sent.

    Another task or worker held the user's conversation for longer than the `lock_timeout`:
    a long turn, a queue of messages from the same user, or a crashed worker whose lock has
    not expired yet.
    """


class StoreConflictError(StoreError):
    """The stored conversation changed while this turn ran, so this turn was not saved.

    This happens only when the turn's lock expired before it ended (the worker stalled for
    longer than `lock_ttl`) and another worker took over the user. `reply` holds the reply that
    was received but not stored.
    """
