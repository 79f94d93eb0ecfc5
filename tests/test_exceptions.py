"""The error tree, its one mapping of httpx errors, and the server-text helpers."""

from __future__ import annotations

import email.utils
import inspect
import time
import traceback

import httpx
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quickchat_async
from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConversationNotFoundError,
    HTTPResponse,
    Httpx2Transport,
    HttpxTransport,
    InternalServerError,
    QuickchatError,
    RateLimitError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    ValidationError,
)
from quickchat_async._transports._base import scrubbed
from quickchat_async._wire import (
    MAX_QUOTED_CHARS,
    error_from_response,
    parse_retry_after,
    quote_server_text,
)


def error_from_httpx(exc: BaseException, *, url: str, may_be_sent: bool):
    return HttpxTransport.engine.translate(exc, url=url, may_be_sent=may_be_sent)


def test_standard_library_bases():
    """Bad input is a ValueError and timeouts are TimeoutErrors, so generic handlers work."""
    assert issubclass(ValidationError, ValueError)
    assert issubclass(APITimeoutError, TimeoutError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(ConversationNotFoundError, BadRequestError)
    assert issubclass(ServiceUnavailableError, InternalServerError)


def test_every_error_is_a_quickchat_error():
    """One base class catches everything the SDK raises."""
    for name in quickchat_async.__all__:
        value = getattr(quickchat_async, name)
        if inspect.isclass(value) and issubclass(value, Exception):
            assert issubclass(value, QuickchatError), name


def _httpx_transport_errors() -> list[type[httpx.HTTPError]]:
    return [
        value
        for value in vars(httpx).values()
        if inspect.isclass(value) and issubclass(value, httpx.TransportError)
    ]


@pytest.mark.parametrize("exc_type", _httpx_transport_errors(), ids=lambda t: t.__name__)
def test_every_httpx_error_has_a_mapping(exc_type):
    """Each httpx transport error is listed explicitly, not left to a catch-all."""
    engine = HttpxTransport.engine
    mapped = {t for t, _ in (*engine.not_sent, *engine.maybe_sent)}

    assert exc_type in mapped


@pytest.mark.parametrize(
    ("exc", "cls", "unknown"),
    [
        (httpx.ConnectError("refused"), APIConnectionError, False),
        (httpx.ConnectTimeout("slow"), APITimeoutError, False),
        (httpx.PoolTimeout("full"), APITimeoutError, False),
        (httpx.ReadTimeout("slow"), APITimeoutError, True),
        (httpx.WriteTimeout("slow"), APITimeoutError, True),
        (httpx.RemoteProtocolError("gone"), APIConnectionError, True),
        (httpx.ReadError("reset"), APIConnectionError, True),
        (httpx.ProxyError("no"), APIConnectionError, True),
        (httpx.DecodingError("bad gzip"), APIConnectionError, True),
    ],
)
def test_httpx_mapping(exc, cls, unknown):
    """Connect-phase failures are safe; anything after sending has an unknown outcome."""
    error = error_from_httpx(exc, url="https://app.quickchat.ai/chat", may_be_sent=True)

    assert type(error) is cls
    assert error.outcome_unknown is unknown
    assert "https://app.quickchat.ai/chat" in error.message


def _httpx2_transport_errors() -> list[type[BaseException]]:
    return [
        value
        for value in vars(httpx2).values()
        if inspect.isclass(value) and issubclass(value, httpx2.TransportError)
    ]


@pytest.mark.parametrize("exc_type", _httpx2_transport_errors(), ids=lambda t: t.__name__)
def test_every_httpx2_error_has_a_mapping(exc_type):
    """Each httpx2 transport error is listed explicitly, not left to a catch-all."""
    engine = Httpx2Transport.engine
    mapped = {t for t, _ in (*engine.not_sent, *engine.maybe_sent)}

    assert exc_type in mapped


def test_httpx_mapping_knows_when_nothing_was_sent():
    """A read error before the request went out (per the trace) is not ambiguous."""
    error = error_from_httpx(httpx.ReadError("reset"), url="u", may_be_sent=False)

    assert not error.outcome_unknown
    assert "not sent" in error.message


def _response(status: int, text: str = "", **headers: str) -> HTTPResponse:
    return HTTPResponse(status, httpx.Headers(headers), text.encode())


@pytest.mark.parametrize(
    ("status", "text", "cls"),
    [
        (400, "Request is not authenticated", AuthenticationError),
        (400, "Authentication credentials were not provided.", AuthenticationError),
        (400, "Conversation conv_id x is not valid.", ConversationNotFoundError),
        (400, "conv_id x does not exist", ConversationNotFoundError),
        (400, "Missing required parameter: text", BadRequestError),
        (401, "", AuthenticationError),
        (429, "", RateLimitError),
        (502, "", InternalServerError),
        (504, "", InternalServerError),
        (503, "", ServiceUnavailableError),
        (301, "", APIStatusError),
        (409, "", APIStatusError),
    ],
)
def test_status_mapping(status, text, cls):
    """Statuses and documented texts map to the most specific class."""
    assert type(error_from_response(_response(status, text), url="u")) is cls


def test_outcome_unknown_by_status():
    """5xx may have been recorded, 503 was not processed, 4xx were refused."""
    assert error_from_response(_response(500), url="u").outcome_unknown
    assert not error_from_response(_response(503), url="u").outcome_unknown
    assert not error_from_response(_response(400), url="u").outcome_unknown


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("0", 0.0),
            ("5", 5.0),
            (" 12 ", 12.0),
            ("1.5", 1.5),
            ("-3", None),
            ("soon", None),
            ("5 seconds", None),
            ("１２", None),
            ("99999999999999999999999", 366 * 24 * 3600.0),
            ("Mon, 32 Foo 2026 99:99:99 GMT", None),
        ],
    )
    def test_values(self, value, expected):
        """Seconds are read, garbage and negatives ignored, huge values capped."""
        assert parse_retry_after(value) == expected

    def test_http_date(self):
        """An HTTP date gives the seconds from now; a past date gives 0."""
        now = time.time()
        future = email.utils.formatdate(now + 30, usegmt=True)
        past = email.utils.formatdate(now - 30, usegmt=True)

        assert 28 <= parse_retry_after(future, now=now) <= 31  # type: ignore[operator]
        assert parse_retry_after(past, now=now) == 0.0

    @given(st.text())
    def test_never_raises(self, value):
        """Any header value gives None or a finite non-negative number."""
        result = parse_retry_after(value)

        assert result is None or 0 <= result <= 366 * 24 * 3600.0


class TestQuoteServerText:
    def test_whitespace_collapsed_and_cut(self):
        """Long texts are cut to a bounded, single-line quote."""
        quoted = quote_server_text("word\n\t " * 1000)

        assert "\n" not in quoted
        assert len(quoted) <= MAX_QUOTED_CHARS

    def test_secrets_masked(self):
        """Known credentials are replaced by ***."""
        assert quote_server_text("bad key k-123", secrets=("k-123", "")) == "bad key ***"

    def test_html_page_reduced(self):
        """An HTML page without a title is reduced to its text."""
        page = "<html><script>var x=1;</script><body><h1>Bad&nbsp;Gateway</h1></body></html>"

        assert quote_server_text(page) == "Bad Gateway"

    @given(st.text(), st.text(min_size=4))
    def test_never_raises_never_leaks(self, text, secret):
        """Any body quotes safely: bounded, and the secret never appears verbatim."""
        quoted = quote_server_text(text + secret + text, secrets=(secret,))

        assert len(quoted) <= MAX_QUOTED_CHARS
        if secret.strip() and "*" not in secret and secret == " ".join(secret.split()):
            assert secret not in quoted


def test_unexpected_response_error_attributes():
    """UnexpectedResponseError keeps the status and a trimmed body."""
    error = UnexpectedResponseError("m", status_code=200, body="x")

    assert error.outcome_unknown
    assert (error.status_code, error.body) == (200, "x")
    assert repr(error) == "UnexpectedResponseError('m')"


def test_scrubbed_clears_engine_frame_locals():
    """scrubbed() wipes the locals of finished frames in the error and its chain."""

    def engine(header: str) -> None:
        try:
            raise OSError("socket closed")  # noqa: TRY301 -- a chained error is the point
        except OSError as inner:
            raise httpx.WriteError("write failed") from inner

    try:
        engine("Bearer " + "tok-CANARY-in-a-frame")
    except httpx.WriteError as exc:
        error = exc

    def engine_locals() -> str:
        stack = traceback.TracebackException.from_exception(error, capture_locals=True).stack
        return "".join(str(frame.locals) for frame in stack if frame.name == "engine")

    assert "tok-CANARY-in-a-frame" in engine_locals()
    scrubbed(error)
    assert "tok-CANARY-in-a-frame" not in engine_locals()
    assert "in engine" in "".join(traceback.format_exception(error))
