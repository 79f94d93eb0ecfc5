"""The wire core: the Chat endpoint's rules for one exchange, with no I/O.

A turn becomes a `ChatRequest` (`encode_turn`); a response becomes a `Reply` or the error it
means (`decode_reply`, `error_from_response`); a transport failure becomes an error that says
whether the message may have reached the server (`connection_error`, `classify`); and the
retry policy decides what may be sent again (`retry_delay`). The async and blocking clients,
every transport and the tests all use these same functions.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Final, TypeAlias, cast

import attrs
import orjson

from ._config import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    Call,
    CallOptions,
    ClientConfig,
    Timeout,
)
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConversationNotFoundError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    ValidationError,
)
from ._html import page_text
from ._models import HTTPResponse, Reply
from ._types import JSONValue
from ._validation import (
    MAX_JSON_DEPTH,
    check_context,
    check_conv_id,
    check_metadata,
    check_text,
    nested_deeper_than,
)


__all__ = [
    "BACKOFF",
    "MAX_QUOTED_CHARS",
    "MAX_RETRY_AFTER",
    "ChatRequest",
    "ErrorTable",
    "classify",
    "connection_error",
    "deadline_error",
    "decode_reply",
    "encode_say",
    "encode_turn",
    "error_from_response",
    "parse_retry_after",
    "quote_server_text",
    "retry_delay",
    "retry_log_line",
    "slot_timeout_error",
    "turn_deadline_error",
    "unexpected_response",
]

#: How much of a server's error text an exception message quotes.
MAX_QUOTED_CHARS: Final = 300
#: How much of an HTML error page is read for its text when it has no `<title>`: the text a
#: message quotes is near the top, and the scan's cost (linear) stays a few milliseconds.
_MAX_SCANNED_CHARS: Final = 16 * 1024
#: The longest `Retry-After` the SDK sleeps through; longer, it raises at once.
MAX_RETRY_AFTER: Final = 60.0
#: Exponential backoff between retries: 0.5 s, then 1 s, ... up to 8 s, plus up to 1 s of jitter.
BACKOFF: Final = {"wait_initial": 0.5, "wait_max": 8.0, "wait_jitter": 1.0}


# --- the request ------------------------------------------------------------------------------


@attrs.frozen(slots=True, repr=False)
class ChatRequest:
    """One prepared POST to the Chat endpoint.

    Its repr shows only the URL: the headers and body may hold a credential. Tools that walk
    attrs fields instead of calling repr (rich's pretty printer and its tracebacks with locals)
    skip them too.

    Attributes:
        url: the absolute URL to POST to.
        headers: the request headers, including authentication for the current flavor.
        body: the JSON body, already encoded.
        timeout: the limits for this attempt.
        max_response_bytes: read at most this much of the response body.
        text: the user's message in the body, for telemetry that records it (when the user
            opts in); None for a request built by hand.
    """

    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    timeout: Timeout = DEFAULT_TIMEOUT
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    text: str | None = attrs.field(default=None, repr=False, kw_only=True)

    def __repr__(self) -> str:
        return f"<ChatRequest POST {self.url}>"


def encode_turn(
    config: ClientConfig,
    call: Call,
    *,
    text: str,
    conv_id: str | None = None,
    client_metadata: Mapping[str, JSONValue] | None = None,
    message_context: str | None = None,
) -> ChatRequest:
    """The request for one message, its fields in the documented order, then `extra_body`.

    The inputs were validated; the body is encoded from them alone, so a failure here can hold
    no credential, and the config's body prefix (which starts with the legacy `api_key`) is
    joined on only once nothing can fail. `call` gives the headers and the attempt's limits.

    Raises:
        ValidationError: client_metadata changed since it was checked and is no longer JSON.
    """
    fields: dict[str, JSONValue] = {}
    if conv_id is not None:
        fields["conv_id"] = conv_id
    fields["text"] = text
    if message_context is not None:
        fields["message_context"] = message_context
    if client_metadata:
        fields["client_metadata"] = cast("dict[str, JSONValue]", client_metadata)
    if call.extra_body:
        fields.update(call.extra_body)
    try:
        encoded = orjson.dumps(fields)
    except orjson.JSONEncodeError:
        encoded = _encode_slowly(fields)
    return ChatRequest(
        config.url,
        call.headers,
        config.body_prefix + encoded[1:],
        call.timeout,
        config.max_response_bytes,
        text=text,
    )


def encode_say(
    config: ClientConfig,
    options: CallOptions,
    *,
    text: object,
    conv_id: object = None,
    client_metadata: object = None,
    message_context: object = None,
) -> tuple[ChatRequest, Call]:
    """Check the input of a bare `say()` and encode it; `kb_topic` may be in its metadata.

    Returns the request and the turn's settings (`options` over the client's).

    Raises:
        ValidationError: bad input, or a bad per-call option.
        TypeError: a per-call option that does not exist.
    """
    checked_text = check_text(text)
    context = check_context(message_context, name="message_context")
    checked_conv_id = check_conv_id(conv_id)
    metadata = check_metadata(client_metadata, name="client_metadata", allow_kb_topic=True)
    call = config.call(options)
    request = encode_turn(
        config,
        call,
        text=checked_text,
        conv_id=checked_conv_id,
        client_metadata=metadata,
        message_context=context,
    )
    return request, call


#: The encoder for what orjson refuses although it is JSON: integers beyond 64 bits, and
#: nesting deeper than 254 levels (the validation's own check allows both).
_JSON_BODY: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=True, separators=(",", ":")
)


def _encode_slowly(fields: dict[str, JSONValue]) -> bytes:
    """Encode a body orjson refused: JSON it cannot write, or metadata changed since checked.

    Raises:
        ValidationError: client_metadata is no longer JSON.
    """
    try:
        return _JSON_BODY.encode(fields).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # changed since it was checked
        raise ValidationError(f"The message cannot be sent as JSON: {exc}.") from None


# --- the reply --------------------------------------------------------------------------------


def decode_reply(
    response: HTTPResponse,
    *,
    config: ClientConfig,
    conv_id: str | None,
    attempts: int = 1,
    elapsed: float = 0.0,
) -> Reply:
    """The reply in a response, or the error it means.

    The legacy flavor leaves `conv_id` out on continuations: the request's one stands.

    Raises:
        APIStatusError: an error status (see `error_from_response`).
        ResponseTooLargeError: the body was longer than `max_response_bytes`.
        UnexpectedResponseError: a 2xx that is not the documented JSON. It is raised here, from
            a frame that holds no part of the body: a server may echo a credential, and a
            traceback formatted with locals would print it.
    """
    status = response.status_code
    if not 200 <= status < 300:  # noqa: PLR2004
        raise error_from_response(
            response, url=config.url, secrets=config.secrets, attempts=attempts
        )
    if response.truncated:
        err = unexpected_response(
            f"the body is larger than max_response_bytes={config.max_response_bytes}",
            status_code=status,
            body=response.content,
            secrets=config.secrets,
        )
        raise ResponseTooLargeError(err.message, status_code=status, body=err.body)
    reply = _parse_reply(response.content, conv_id, attempts, elapsed)
    if isinstance(reply, str):
        raise unexpected_response(
            reply, status_code=status, body=response.content, secrets=config.secrets
        )
    return reply


def _parse_reply(  # noqa: PLR0911 -- one return per way a body can fail
    content: bytes, conv_id: str | None, attempts: int, elapsed: float
) -> Reply | str:
    """The reply in a 2xx body, or why there is none."""
    try:
        data: object = orjson.loads(content)
    except orjson.JSONDecodeError:  # not JSON, not UTF-8, too deep, or a lone surrogate
        data = _decode_leniently(content)
        if data is None:
            return "its body is not JSON"
    if not isinstance(data, dict):
        return "its body is not a JSON object"
    data = cast("dict[str, JSONValue]", data)
    # Nesting d levels takes d opening brackets: a body with fewer cannot be too deep (counting
    # them is a byte scan; walking every reply was 2 to 3k instructions a turn).
    if content.count(b"{") + content.count(b"[") > MAX_JSON_DEPTH and nested_deeper_than(
        data, MAX_JSON_DEPTH
    ):
        return f"its body is nested more than {MAX_JSON_DEPTH} levels deep"
    reply = data.get("reply")
    if not isinstance(reply, str):
        return "its body has no 'reply' text"
    got_conv_id = data.get("conv_id")
    if got_conv_id is None:
        got_conv_id = conv_id
    if not isinstance(got_conv_id, str) or not got_conv_id:
        return "its body has no conv_id for the new conversation"
    if conv_id is not None and got_conv_id != conv_id:
        return "its conv_id is not the one of the conversation it continues"
    ord_number = data.get("ord_number")
    src = data.get("src")
    return Reply(
        conv_id=got_conv_id,
        html=reply,
        ord_number=ord_number if type(ord_number) is int else None,
        src=src if type(src) is int else None,
        raw=data,
        attempts=attempts,
        elapsed=elapsed,
    )


def _decode_leniently(content: bytes) -> object | None:
    r"""Decode a body orjson refused but that is JSON all the same; None if it is not.

    orjson refuses integers beyond 64 bits and a string escape of half a UTF-16 pair (`\ud83d`,
    an emoji cut in two, as a server that slices text may send). Those halves are replaced by
    U+FFFD, so that the reply can be shown, sent back and stored; a conv_id that held one is
    refused by the caller (it would no longer name the conversation). Numbers that are not
    finite (`NaN`, `1e999`) are not JSON a store could write: refused.
    """
    try:
        data: object = json.loads(
            content.decode(), parse_constant=_not_a_number, parse_float=_finite_float
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        return data  # the caller refuses it, saying so
    decoded = data  # what isinstance() below narrows is `data` only
    if isinstance(data, dict):
        conv_id = cast("dict[str, object]", data).get("conv_id")
        if isinstance(conv_id, str) and _has_lone_surrogate(conv_id):
            return None
    return _without_lone_surrogates(decoded)


def _not_a_number(name: str) -> float:
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _without_lone_surrogates(value: object) -> object:
    """`value` with every half of a UTF-16 pair, in keys and strings, replaced by U+FFFD.

    Called only on what `json.loads` built, at most `MAX_JSON_DEPTH` levels deep.
    """
    if isinstance(value, str):
        if not _has_lone_surrogate(value):
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in cast("list[object]", value)]
    if isinstance(value, dict):
        items = cast("dict[str, object]", value).items()
        return {
            cast("str", _without_lone_surrogates(key)): _without_lone_surrogates(item)
            for key, item in items
        }
    return value


# --- from server text to a message a user can act on ---------------------------------------

_SPACE = re.compile(r"\s+")
_CONV_NOT_FOUND = re.compile(
    r"conv_id\s+\S*\s*(is not valid|does not exist|n.existe pas)", re.IGNORECASE
)
_NOT_AUTHENTICATED = re.compile(r"authenticat|unauthori[sz]ed|credential", re.IGNORECASE)


def quote_server_text(text: str, *, secrets: Sequence[str] = ()) -> str:
    """Reduce a server's error body to one short line that is safe to show.

    HTML pages (from proxies) are reduced to their title or text, whitespace is collapsed, any
    known credential is masked, and the result is cut to `MAX_QUOTED_CHARS`. The time taken is
    linear in the size of the text, whatever it holds (see `_html`).
    """
    if "<" in text and ">" in text:
        text = page_text(text, limit=4 * MAX_QUOTED_CHARS, scan=_MAX_SCANNED_CHARS)
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


def error_from_response(
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
    if 400 <= status < 500 and status != 429:  # noqa: PLR2004
        cls, message = _client_error(status, quoted, said, url)
        return cls(message, status_code=status, server_message=quoted, response=response)
    if status in {429, 503}:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        busy, message = _busy_error(status, said, attempts, retry_after)
        return busy(
            message,
            status_code=status,
            server_message=quoted,
            response=response,
            retry_after=retry_after,
        )
    if status >= 500:  # noqa: PLR2004
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        message = (
            f"Quickchat failed with a server error ({status}{said}){tried}. It may or may not "
            "have recorded the message, so the SDK did not resend it. If it persists, contact "
            "Quickchat support."
        )
        cls = InternalServerError
    elif 300 <= status < 400:  # noqa: PLR2004
        target = quote_server_text(response.headers.get("location", ""), secrets=secrets)
        message = (
            f"Quickchat answered with a redirect ({status}) to {target!r}. The SDK does not "
            "follow redirects, so that credentials never leave their origin: set base_url to "
            "the final address."
        )
        cls = APIStatusError
    else:
        message = (
            f"Quickchat answered with HTTP {status}{said}, which the Chat endpoint does not "
            f"document. Check that base_url points at the Chat endpoint (requests go to {url})."
        )
        cls = APIStatusError
    return cls(message, status_code=status, server_message=quoted, response=response)


def _client_error(
    status: int, quoted: str, said: str, url: str
) -> tuple[type[APIStatusError], str]:
    """The error class of a 4xx (429 aside), and what to tell the user."""
    if status == 400 and _CONV_NOT_FOUND.search(quoted):  # noqa: PLR2004
        return ConversationNotFoundError, (
            f"Quickchat does not know this conversation (400{said}). Omit conv_id to start a new "
            "conversation, or pass a conv_id returned by a previous reply of this scenario."
        )
    if status == 401 or (status == 400 and _NOT_AUTHENTICATED.search(quoted)):  # noqa: PLR2004
        return AuthenticationError, (
            f"Quickchat refused the credential ({status}{said}). Check the API token (current "
            "flavor) or api_key (legacy flavor) and that it belongs to this scenario_id."
        )
    if status == 400:  # noqa: PLR2004
        return BadRequestError, (
            f"Quickchat rejected the request (400{said}). Check scenario_id, text, conv_id, "
            "client_metadata (at most 5 keys) and message_context (at most 1000 characters)."
        )
    if status == 403:  # noqa: PLR2004
        return PermissionDeniedError, (
            f"Quickchat denied access (403{said}). The credential is valid but may not use this "
            "scenario; check the API access of your plan."
        )
    if status == 404:  # noqa: PLR2004
        return ScenarioNotFoundError, (
            f"Quickchat found no AI Agent for this request (404{said}). Verify the scenario_id, "
            f"that your credential is bound to it, and the base URL (requests go to {url})."
        )
    return APIStatusError, (
        f"Quickchat answered with HTTP {status}{said}, which the Chat endpoint does not "
        f"document. Check that base_url points at the Chat endpoint (requests go to {url})."
    )


def _busy_error(
    status: int, said: str, attempts: int, retry_after: float | None
) -> tuple[type[RateLimitError | ServiceUnavailableError], str]:
    """The error class of a 429 or a 503, and what to tell the user (the wait included)."""
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    wait = f" It asked to wait {retry_after:g} s." if retry_after is not None else ""
    if status == 429:  # noqa: PLR2004
        message = (
            f"Quickchat is rate-limiting this credential (429{said}){tried}.{wait} "
            "Slow down, or spread the load over time."
        )
        return RateLimitError, message
    message = (
        f"Quickchat is temporarily overloaded or in maintenance (503{said}){tried}.{wait} "
        "The message was not processed; try again later."
    )
    return ServiceUnavailableError, message


# --- transport failures ------------------------------------------------------------------------

#: Rows of (exception type, what the SDK was doing when it was raised), most specific first.
ErrorTable: TypeAlias = tuple[tuple[type[BaseException], str], ...]

_UNSENT_ADVICE = "The message was not sent. Check base_url and the network, then try again."
_UNKNOWN_ADVICE = (
    "Quickchat may or may not have recorded the message; the SDK did not resend it, to avoid a "
    "duplicate. The next reply of the conversation tells whether it landed."
)


_UNTRUSTED_ADVICE = (
    "The server's certificate is not signed by an authority this machine trusts: for a private "
    "one, point SSL_CERT_FILE at its bundle, or pass an http_client verifying with it."
)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc`, if any (some engines wrap it in errors without a message).

    Only links the engine made are followed: a cause, or the context of an error raised
    ``from None``. The context of any other error may be the caller's own exception, being
    handled when the caller sent the message.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = current.__context__ if current.__suppress_context__ else None
    return None


def connection_error(
    *,
    url: str,
    action: str,
    cause: BaseException,
    sent: bool,
    timeout: bool = False,
) -> APIConnectionError:
    """Build the error for a failed exchange; `sent` says whether the request may have gone out.

    The message names the engine's error and its text, or the text of the TLS error behind it;
    a certificate no trusted authority signed adds how to trust one.
    """
    detail = str(cause).strip()
    tls = _tls_failure(cause)
    if not detail and tls is not None:
        detail = str(tls).strip()
    reason = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    advice = _UNKNOWN_ADVICE if sent else _UNSENT_ADVICE
    if isinstance(tls, ssl.SSLCertVerificationError):
        advice = f"{_UNTRUSTED_ADVICE} {advice}"
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


def classify(
    exc: BaseException,
    *,
    url: str,
    tables: tuple[tuple[ErrorTable, bool], ...],
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


def turn_deadline_error(*, url: str, deadline: float | None, sent: bool) -> APITimeoutError:
    """The error of a turn that reached its `deadline`, retries and waits included."""
    advice = _UNKNOWN_ADVICE if sent else _UNSENT_ADVICE
    return APITimeoutError(
        f"The turn reached its deadline of {deadline:g} s (every attempt, backoff and "
        f"Retry-After wait included) talking to {url}. {advice}",
        url=url,
        outcome_unknown=sent,
    )


def slot_timeout_error(*, url: str, total: float | None, slots: int) -> APITimeoutError:
    """The error of an attempt that found no free connection slot before its deadline."""
    return APITimeoutError(
        f"The SDK timed out after {total:g} s waiting for one of its {slots:g} connection "
        f"slots to {url}. The message was not sent. Raise max_connections or the timeout, or "
        "send less at once.",
        url=url,
    )


def retry_log_line(url: str, num: int, attempts: int, last: BaseException) -> str:
    """The INFO line logged before a retry (no credential, no message text)."""
    reason = type(last).__name__
    return f"Retrying the Chat request to {url} (attempt {num} of {attempts}) after {reason}"


# --- the retry policy --------------------------------------------------------------------------


def retry_delay(exc: Exception, *, retry_ambiguous: bool) -> bool | float:
    """Whether a failed attempt may be sent again, for stamina: False, True (back off), or seconds.

    Only what the server cannot have recorded is retried: connection failures before sending,
    429 and 503 (after their `Retry-After`, up to `MAX_RETRY_AFTER`). A failure after which
    the message may have landed (`outcome_unknown`) is retried only with `retry_ambiguous`.
    """
    if isinstance(exc, (RateLimitError, ServiceUnavailableError)):
        if exc.retry_after is None:
            return True
        return exc.retry_after if exc.retry_after <= MAX_RETRY_AFTER else False
    if not isinstance(exc, (APIConnectionError, InternalServerError, UnexpectedResponseError)):
        return False
    if exc.outcome_unknown:
        return retry_ambiguous
    return True


# --- 2xx that cannot be used -------------------------------------------------------------------


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
