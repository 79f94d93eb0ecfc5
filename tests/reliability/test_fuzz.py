"""Fuzzing the parsers that read what a server sends: Retry-After, error texts, reply bodies.

Each example is a bad (or odd) input; the suite counts them in its totals ("bad inputs tried").
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math

import httpx2
from hypothesis import example, given
from hypothesis import strategies as st

from quickchat_async import (
    APIStatusError,
    AsyncQuickchat,
    AuthenticationError,
    BadRequestError,
    ChatRequest,
    ConversationNotFoundError,
    HTTPResponse,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    Reply,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from quickchat_async._wire import (
    MAX_QUOTED_CHARS,
    decode_reply,
    error_from_response,
    parse_retry_after,
    quote_server_text,
)

from .rule import API_KEY, SECRETS, TALLY, TOKEN, assert_no_secret
from .strategies import bodies, bounded, headers, retry_after_values, server_texts


NOW = 1_800_000_000.0
#: The longest Retry-After the parser gives back: a year and a day, far above the retry cap.
CEILING = 366 * 24 * 3600.0


class Unused:
    """A transport for clients that only decode: it is never called."""

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        raise AssertionError(request)

    async def aclose(self) -> None:
        pass


def tried() -> None:
    TALLY["bad inputs tried"] += 1


class TestRetryAfterParser:
    @bounded(600)
    @given(retry_after_values)
    @example("１２")  # full-width digits: not delay-seconds
    @example("1e400")
    @example("Wed, 21 Oct 2015 07:28:00")  # no zone
    def test_any_value(self, value):
        """Never raises; None, or a finite delay between 0 and the ceiling."""
        tried()
        seconds = parse_retry_after(value, now=NOW)
        assert seconds is None or (math.isfinite(seconds) and 0.0 <= seconds <= CEILING)
        text = value.strip()
        if text.isascii() and text.isdigit():
            assert seconds == min(float(text), CEILING)
        if text.startswith("-") and text[1:].isdigit():
            assert seconds is None, "a negative delay is garbage"

    @bounded(200)
    @given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)))  # noqa: DTZ001
    def test_http_dates(self, when):
        """An HTTP date gives the seconds until then (0 if passed, at most the ceiling)."""
        tried()
        when = when.replace(tzinfo=dt.UTC, microsecond=0)
        header = email.utils.format_datetime(when, usegmt=True)
        expected = min(max(when.timestamp() - NOW, 0.0), CEILING)
        assert parse_retry_after(header, now=NOW) == expected


class TestServerText:
    @bounded(400)
    @given(server_texts, st.sampled_from(SECRETS))
    def test_quoted_safely(self, text, secret):
        """One short line, with no tag soup, and the credential masked."""
        tried()
        quoted = quote_server_text(text, secrets=SECRETS)
        assert len(quoted) <= MAX_QUOTED_CHARS
        assert "\n" not in quoted
        assert quoted == quoted.strip()
        assert secret not in quoted


#: The class each status maps to, whatever the text (400 depends on the text).
BY_STATUS = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: ScenarioNotFoundError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


class TestErrorMapping:
    @bounded(600)
    @given(
        st.integers(100, 599).filter(lambda s: not 200 <= s < 300)
        | st.sampled_from([400, 400, 401, 404, 429, 503]),
        server_texts,
        headers,
    )
    def test_any_error_response(self, status, text, header_map):
        """Every status and text maps to exactly one documented class, saying what to do."""
        tried()
        response = HTTPResponse(
            status, httpx2.Headers(header_map), text.encode("utf-8", "surrogatepass")
        )
        error = error_from_response(
            response, url="https://app.quickchat.ai/chat", secrets=SECRETS, attempts=3
        )
        assert isinstance(error, APIStatusError)
        assert error.status_code == status
        assert str(status) in error.message
        assert len(error.message) < 2 * MAX_QUOTED_CHARS + 400
        for secret in SECRETS:
            assert secret not in error.message
            assert secret not in error.server_message
            assert secret not in repr(error)
        if status in BY_STATUS:
            assert type(error) is BY_STATUS[status]
        elif status == 400:
            assert isinstance(error, (BadRequestError, AuthenticationError))
            if type(error) is ConversationNotFoundError:
                assert "conv_id" in error.server_message.lower()
        elif status >= 500:
            assert type(error) is InternalServerError
        else:
            assert type(error) is APIStatusError
        assert error.outcome_unknown is (type(error) is InternalServerError)
        if isinstance(error, (RateLimitError, ServiceUnavailableError)):
            header = httpx2.Headers(header_map).get("retry-after")
            assert error.retry_after == parse_retry_after(header) or (
                error.retry_after is not None and header is not None
            )  # a date is read against the clock, a moment apart

    @bounded(200)
    @given(st.sampled_from(list(range(1, 9))), st.sampled_from(SECRETS))
    def test_documented_texts_with_an_echoed_secret(self, which, secret):
        """A server that echoes the credential in a documented text: the mapping holds, masked."""
        tried()
        texts = {
            1: (400, "Request is not authenticated", AuthenticationError),
            2: (400, "Conversation conv_id {} is not valid.", ConversationNotFoundError),
            3: (400, "conv_id {} does not exist", ConversationNotFoundError),
            4: (401, "Unauthorized {}", AuthenticationError),
            5: (404, "No implementation found for scenario_id {}", ScenarioNotFoundError),
            6: (400, "Missing required parameter: text {}", BadRequestError),
            7: (500, "Internal Server Error {}", InternalServerError),
            8: (302, "", APIStatusError),
        }
        status, text, cls = texts[which]
        response = HTTPResponse(
            status,
            httpx2.Headers({"location": f"https://evil.example/?k={secret}"}),
            text.format(secret).encode(),
        )
        error = error_from_response(response, url="u", secrets=SECRETS)
        assert type(error) is cls
        assert_no_secret(error.message, "the error message")


def decoded(
    client: AsyncQuickchat, response: HTTPResponse, conv_id: str | None
) -> Reply | UnexpectedResponseError:
    """What the client makes of a 2xx: the reply, or the error it raises."""
    try:
        return decode_reply(response, config=client.config, conv_id=conv_id)
    except UnexpectedResponseError as exc:
        return exc


class TestReplyDecoder:
    @bounded(600)
    @given(bodies, st.sampled_from([None, "conv-1"]), st.sampled_from([200, 201, 204]))
    def test_any_2xx_body(self, body, conv_id, status):
        """A Reply with a non-empty conv_id, or UnexpectedResponseError; nothing else."""
        tried()
        client = AsyncQuickchat(token=TOKEN, scenario_id="s", transport=Unused())
        response = HTTPResponse(status, httpx2.Headers(), body)
        reply = decoded(client, response, conv_id)
        if isinstance(reply, UnexpectedResponseError):
            assert reply.outcome_unknown
            assert reply.status_code == status
            assert len(reply.body) <= MAX_QUOTED_CHARS
            assert TOKEN not in reply.message
            return
        assert isinstance(reply, Reply)
        assert isinstance(reply.conv_id, str)
        assert reply.conv_id
        sent = reply.raw.get("conv_id")
        assert reply.conv_id == (conv_id if sent is None else sent)
        assert reply.html == reply.raw["reply"]
        assert reply.ord_number is None or type(reply.ord_number) is int
        assert isinstance(reply.text, str)

    @bounded(100)
    @given(bodies)
    def test_legacy_body_masks_its_api_key(self, body):
        """A legacy-flavor body that is not a reply never quotes the api_key."""
        tried()
        client = AsyncQuickchat(api_key=API_KEY, scenario_id="s", transport=Unused())
        error = decoded(client, HTTPResponse(200, {}, body + API_KEY.encode()), None)
        assert isinstance(error, UnexpectedResponseError)  # a key glued on: never JSON
        assert API_KEY not in error.message
        assert API_KEY not in error.body
