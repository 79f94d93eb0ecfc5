"""The error tree, and the one place that maps HTTP statuses and transport failures onto it.

::

    QuickchatError
    ├── ValidationError (also ValueError): bad input, caught before anything is sent
    ├── ClientClosedError (also RuntimeError): the client was used after aclose()
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
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import math
import re
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING

import httpx


if TYPE_CHECKING:
    from ._models import Reply
    from ._transport import HTTPResponse

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConversationNotFoundError",
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

#: How much of a server's error text an exception message quotes.
MAX_QUOTED_CHARS = 300


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


# --- from server text to a message a user can act on ------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_NOISE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_CONV_NOT_FOUND = re.compile(
    r"conv_id\s+\S*\s*(is not valid|does not exist|n.existe pas)", re.IGNORECASE
)
_NOT_AUTHENTICATED = re.compile(r"authenticat|unauthori[sz]ed|credential", re.IGNORECASE)


def quote_server_text(text: str, *, secrets: Sequence[str] = ()) -> str:
    """Reduce a server's error body to one short line that is safe to show.

    HTML pages (from proxies) are reduced to their title or text, whitespace is collapsed, any
    known credential is masked, and the result is cut to `MAX_QUOTED_CHARS`.
    """
    if "<" in text and ">" in text:
        title = _HTML_TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", _HTML_NOISE.sub(" ", text))
        text = html.unescape(text)
    text = _SPACE.sub(" ", text).strip()
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if len(text) > MAX_QUOTED_CHARS:
        text = text[: MAX_QUOTED_CHARS - 1].rstrip() + "…"
    return text


#: The longest `Retry-After` the parser returns; anything longer is capped here (it only matters
#: that it is above the retry cap, so the caller raises instead of sleeping for hours).
_RETRY_AFTER_CEILING = 366 * 24 * 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a `Retry-After` header: delay-seconds or an HTTP date; None if absent or garbage.

    Negative or unparseable values are ignored (None), dates in the past give 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.replace(".", "", 1).isdigit():
        seconds = float(value)
        return min(seconds, _RETRY_AFTER_CEILING) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is taken as such
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), _RETRY_AFTER_CEILING)


def error_from_response(  # noqa: C901, PLR0911 -- a branch per documented status reads best
    response: HTTPResponse, *, url: str, secrets: Sequence[str] = (), attempts: int = 1
) -> APIStatusError:
    """Map an HTTP error response (any status that is not 2xx) to the error tree.

    Args:
        response: the response, with its (bounded) body.
        url: the URL that was requested, for the message.
        secrets: credentials to mask if the server echoed them.
        attempts: how many attempts were made, for the message.
    """
    status = response.status_code
    quoted = quote_server_text(response.text, secrets=secrets)
    said = f": {quoted!r}" if quoted else ""
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""

    def error(cls: type[APIStatusError], message: str) -> APIStatusError:
        return cls(message, status_code=status, server_message=quoted, response=response)

    if status == 400 and _CONV_NOT_FOUND.search(quoted):  # noqa: PLR2004
        return error(
            ConversationNotFoundError,
            f"Quickchat does not know this conversation (400{said}). Omit conv_id to start a new "
            "conversation, or pass a conv_id returned by a previous reply of this scenario.",
        )
    if status == 401 or (status == 400 and _NOT_AUTHENTICATED.search(quoted)):  # noqa: PLR2004
        return error(
            AuthenticationError,
            f"Quickchat refused the credential ({status}{said}). Check the API token (current "
            "flavor) or api_key (legacy flavor) and that it belongs to this scenario_id.",
        )
    if status == 400:  # noqa: PLR2004
        return error(
            BadRequestError,
            f"Quickchat rejected the request (400{said}). Check scenario_id, text, conv_id, "
            "client_metadata (at most 5 keys) and message_context (at most 1000 characters).",
        )
    if status == 403:  # noqa: PLR2004
        return error(
            PermissionDeniedError,
            f"Quickchat denied access (403{said}). The credential is valid but may not use this "
            "scenario; check the API access of your plan.",
        )
    if status == 404:  # noqa: PLR2004
        return error(
            ScenarioNotFoundError,
            f"Quickchat found no AI Agent for this request (404{said}). Verify the scenario_id, "
            f"that your credential is bound to it, and the base URL (requests go to {url}).",
        )
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    wait = f" It asked to wait {retry_after:g} s." if retry_after is not None else ""
    if status == 429:  # noqa: PLR2004
        return RateLimitError(
            f"Quickchat is rate-limiting this credential (429{said}){tried}.{wait} "
            "Slow down, or spread the load over time.",
            status_code=status,
            server_message=quoted,
            response=response,
            retry_after=retry_after,
        )
    if status == 503:  # noqa: PLR2004
        return ServiceUnavailableError(
            f"Quickchat is temporarily overloaded or in maintenance (503{said}){tried}.{wait} "
            "The message was not processed; try again later.",
            status_code=status,
            server_message=quoted,
            response=response,
            retry_after=retry_after,
        )
    if status >= 500:  # noqa: PLR2004
        return error(
            InternalServerError,
            f"Quickchat failed with a server error ({status}{said}){tried}. It may or may not "
            "have recorded the message, so the SDK did not resend it. If it persists, contact "
            "Quickchat support.",
        )
    if 300 <= status < 400:  # noqa: PLR2004
        target = quote_server_text(response.headers.get("location", ""), secrets=secrets)
        return error(
            APIStatusError,
            f"Quickchat answered with a redirect ({status}) to {target!r}. The SDK does not "
            "follow redirects, so that credentials never leave their origin: set base_url to "
            "the final address.",
        )
    return error(
        APIStatusError,
        f"Quickchat answered with HTTP {status}{said}, which the Chat endpoint does not "
        f"document. Check that base_url points at the Chat endpoint (requests go to {url}).",
    )


# --- transport failures ------------------------------------------------------------------------

#: httpx errors raised before a single byte of the request went out: the server cannot have
#: processed it, so retrying is safe. Most specific first.
_NOT_SENT: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ConnectTimeout, "timed out connecting to"),
    (httpx.PoolTimeout, "timed out waiting for a free connection to"),
    (httpx.ConnectError, "could not connect to"),
)
#: httpx errors raised once the request may have been sent: the outcome is unknown.
_MAYBE_SENT: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ReadTimeout, "timed out waiting for the reply from"),
    (httpx.WriteTimeout, "timed out sending the message to"),
    (httpx.TimeoutException, "timed out talking to"),
    (httpx.RemoteProtocolError, "lost the connection to"),
    (httpx.ReadError, "lost the connection to"),
    (httpx.WriteError, "lost the connection to"),
    (httpx.CloseError, "lost the connection to"),
    (httpx.NetworkError, "lost the connection to"),
    (httpx.LocalProtocolError, "could not form a valid HTTP request to"),
    (httpx.ProtocolError, "got a malformed HTTP response from"),
    (httpx.ProxyError, "could not go through the proxy to"),
    (httpx.UnsupportedProtocol, "cannot speak the protocol of"),
    (httpx.DecodingError, "could not decode the reply from"),
    (httpx.TooManyRedirects, "was redirected too often by"),
    (httpx.TransportError, "failed talking to"),
)

_UNSENT_ADVICE = "The message was not sent. Check base_url and the network, then try again."
_UNKNOWN_ADVICE = (
    "Quickchat may or may not have recorded the message; the SDK did not resend it, to avoid a "
    "duplicate. The next reply of the conversation tells whether it landed."
)


def connection_error(
    *,
    url: str,
    action: str,
    cause: BaseException,
    sent: bool,
    timeout: bool = False,
) -> APIConnectionError:
    """Build the error for a failed exchange; `sent` says whether the request may have gone out."""
    detail = str(cause).strip()
    reason = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    advice = _UNKNOWN_ADVICE if sent else _UNSENT_ADVICE
    cls = APITimeoutError if timeout else APIConnectionError
    return cls(f"The SDK {action} {url} ({reason}). {advice}", url=url, outcome_unknown=sent)


def deadline_error(*, url: str, cause: BaseException, sent: bool) -> APIConnectionError:
    """Build the `APITimeoutError` of an attempt that outlived its deadline (`Timeout.total`)."""
    return connection_error(
        url=url,
        action="ran out of time (the per-attempt deadline) talking to",
        cause=cause,
        sent=sent,
        timeout=True,
    )


def _classify(
    exc: BaseException,
    *,
    url: str,
    tables: tuple[tuple[tuple[tuple[type[BaseException], str], ...], bool], ...],
    timeout: bool,
    otherwise_sent: bool,
) -> APIConnectionError:
    """Build the error of the first (exception type, action) row `exc` matches, most specific first.

    Each table comes with whether its errors may have left the request sent; an error no row
    matches is reported as "failed talking to", sent as `otherwise_sent` says.
    """
    for table, sent in tables:
        for exc_type, action in table:
            if isinstance(exc, exc_type):
                return connection_error(
                    url=url, action=action, cause=exc, sent=sent, timeout=timeout
                )
    return connection_error(url=url, action="failed talking to", cause=exc, sent=otherwise_sent)


def error_from_httpx(exc: httpx.HTTPError, *, url: str, may_be_sent: bool) -> QuickchatError:
    """Translate an httpx error.

    Args:
        exc: the error httpx raised.
        url: the request's URL, for the message.
        may_be_sent: False only when the transport knows no byte of the request went out.
    """
    # An httpx.HTTPError that is not a TransportError comes from response helpers we never call.
    return _classify(
        exc,
        url=url,
        tables=((_NOT_SENT, False), (_MAYBE_SENT, may_be_sent)),
        timeout=isinstance(exc, httpx.TimeoutException),
        otherwise_sent=True,
    )


@contextlib.contextmanager
def map_httpx_errors(*, url: str, may_be_sent: Callable[[], bool]) -> Generator[None]:
    """Translate httpx and deadline errors raised inside the block, most specific first.

    `may_be_sent()` is asked at failure time: the httpx transport follows the request's progress,
    which tells a failure before sending (safe to retry) from an ambiguous one.
    """
    try:
        yield
    except httpx.HTTPError as exc:
        raise error_from_httpx(exc, url=url, may_be_sent=may_be_sent()) from scrubbed(exc)
    except TimeoutError as exc:  # the SDK's own per-attempt deadline (anyio.fail_after)
        raise deadline_error(url=url, cause=exc, sent=may_be_sent()) from scrubbed(exc)


def error_from_aiohttp(exc: BaseException, *, url: str, may_be_sent: bool) -> QuickchatError:
    """Translate an aiohttp error (the ``[aiohttp]`` extra must be installed).

    Args:
        exc: the error aiohttp raised (an ``aiohttp.ClientError``).
        url: the request's URL, for the message.
        may_be_sent: False only when the transport knows no byte of the request went out.
    """
    import aiohttp  # noqa: PLC0415 -- an optional extra; only its transport calls this

    not_sent: tuple[tuple[type[BaseException], str], ...] = (
        (aiohttp.ConnectionTimeoutError, "timed out connecting to"),
        (aiohttp.ClientConnectorError, "could not connect to"),
        (aiohttp.InvalidURL, "cannot use the URL"),
    )
    maybe_sent: tuple[tuple[type[BaseException], str], ...] = (
        (aiohttp.SocketTimeoutError, "timed out waiting for the reply from"),
        (aiohttp.ServerTimeoutError, "timed out talking to"),
        (aiohttp.ServerDisconnectedError, "lost the connection to"),
        (aiohttp.ClientPayloadError, "got a cut-short reply from"),
        (aiohttp.ClientConnectionError, "lost the connection to"),
        (aiohttp.ClientResponseError, "got a malformed HTTP response from"),
    )
    return _classify(
        exc,
        url=url,
        tables=((not_sent, False), (maybe_sent, may_be_sent)),
        timeout=isinstance(exc, aiohttp.ServerTimeoutError),
        otherwise_sent=may_be_sent,
    )


def scrubbed(exc: BaseException) -> BaseException:
    """Clear the local variables of the HTTP engine's frames in `exc` and its chain.

    Those frames can hold the request's headers and body (the token, the legacy api_key); a
    traceback formatted with locals would print them. File and line information stays.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
    return exc


def unexpected_response(
    reason: str, *, status_code: int, body: bytes, secrets: Sequence[str] = ()
) -> UnexpectedResponseError:
    """A 2xx whose body cannot be used."""
    text = quote_server_text(body[:4096].decode("utf-8", "replace"), secrets=secrets)
    return UnexpectedResponseError(
        f"Quickchat answered {status_code} but {reason} (body: {text!r}). The server probably "
        "recorded the message; the SDK did not resend it. If it persists, check base_url points "
        "at the Chat endpoint.",
        status_code=status_code,
        body=text,
    )
