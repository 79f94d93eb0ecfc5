"""The wire core, with no transport at all: requests, replies, errors, and the retry policy."""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from typing import Any

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickchat_async import (
    NOT_GIVEN,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatRequest,
    ConversationNotFoundError,
    HTTPResponse,
    InternalServerError,
    PermissionDeniedError,
    QuickchatError,
    RateLimitError,
    Reply,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    Timeout,
    UnexpectedResponseError,
    ValidationError,
)
from quickchat_async._config import ClientConfig
from quickchat_async._types import Secret
from quickchat_async._validation import MAX_JSON_DEPTH, check_metadata
from quickchat_async._wire import (
    MAX_QUOTED_CHARS,
    MAX_RETRY_AFTER,
    classify,
    connection_error,
    deadline_error,
    decode_reply,
    encode_turn,
    error_from_response,
    parse_retry_after,
    quote_server_text,
    retry_delay,
    slot_timeout_error,
)

from .conftest import API_KEY, SCENARIO_ID, TOKEN


URL = "https://app.quickchat.ai/chat"
#: The longest Retry-After the parser gives back: a year and a day.
CEILING = 366 * 24 * 3600.0


def config(
    *, legacy: bool = False, scenario_id: str = SCENARIO_ID, **options: object
) -> ClientConfig:
    """A client's configuration for the test credentials, in either flavor."""
    arguments: dict[str, object] = {
        "base_url": None,
        "timeout": NOT_GIVEN,
        "max_retries": 2,
        "retry_ambiguous": False,
        "deadline": None,
        "default_headers": None,
        "max_connections": 100,
        "max_response_bytes": 1024 * 1024,
        **options,
    }
    return ClientConfig.build(
        token=Secret(None if legacy else TOKEN),
        api_key=Secret(API_KEY if legacy else None),
        scenario_id=scenario_id,
        **arguments,  # type: ignore[arg-type]
    )


def encode(config: ClientConfig, **fields: Any) -> ChatRequest:
    """`encode_turn` with the client's own settings (no per-call options)."""
    return encode_turn(config, config.default_call, **fields)


def response(
    status: int, body: bytes | str = b"", *, truncated: bool = False, **headers: str
) -> HTTPResponse:
    """A response with its body read, as a transport returns it."""
    content = body.encode() if isinstance(body, str) else body
    return HTTPResponse(
        status, {k.replace("_", "-"): v for k, v in headers.items()}, content, truncated
    )


def _nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


def reply_body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# --- the request ---------------------------------------------------------------------------


class TestEncodeTurn:
    def test_first_message_of_the_current_flavor(self):
        """A first message carries only scenario_id and text; the token goes in a header."""
        request = encode(config(), text="Hello!")

        assert request.url == URL
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert json.loads(request.body) == {"scenario_id": SCENARIO_ID, "text": "Hello!"}
        assert b"api_key" not in request.body

    def test_every_field_in_the_documented_order(self):
        """conv_id, text, message_context and client_metadata follow scenario_id, in order."""
        request = encode(
            config(),
            text="Hello!",
            conv_id="conv-uuid-1234",
            client_metadata={"userId": 12, "website": "mywebsite.com"},
            message_context="The user's name is John.",
        )

        assert json.loads(request.body) == {
            "scenario_id": SCENARIO_ID,
            "conv_id": "conv-uuid-1234",
            "text": "Hello!",
            "message_context": "The user's name is John.",
            "client_metadata": {"userId": 12, "website": "mywebsite.com"},
        }
        assert list(json.loads(request.body)) == [
            "scenario_id",
            "conv_id",
            "text",
            "message_context",
            "client_metadata",
        ]

    def test_legacy_flavor_puts_the_api_key_first(self):
        """The legacy flavor sends api_key first in the body and no Authorization header."""
        request = encode(
            config(legacy=True, base_url="https://chat.quickchat.ai"),
            text="Hello!",
            conv_id="abcd1234",
            message_context="The users name is John.",
            client_metadata={"kb_topic": "your-topic"},
        )

        assert request.url == "https://chat.quickchat.ai/chat"
        assert "Authorization" not in request.headers
        assert list(json.loads(request.body)) == [
            "api_key",
            "scenario_id",
            "conv_id",
            "text",
            "message_context",
            "client_metadata",
        ]
        assert json.loads(request.body)["api_key"] == API_KEY

    def test_no_metadata_no_key(self):
        """Empty client_metadata is left out rather than sent as {}."""
        assert b"client_metadata" not in encode(config(), text="hi", client_metadata={}).body

    def test_unicode_and_escaping(self):
        """Quotes, newlines and non-ASCII text survive the encoding, api_key included."""
        request = encode(config(legacy=True), text='Zażółć "gęślą" jaźń\n🙂')

        assert json.loads(request.body)["text"] == 'Zażółć "gęślą" jaźń\n🙂'
        assert json.loads(request.body)["api_key"] == API_KEY

    @hypothesis.settings(max_examples=200, deadline=None)
    @given(
        legacy=st.booleans(),
        credential=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
        text=st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
        conv_id=st.none() | st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
        context=st.none() | st.text(st.characters(exclude_categories=["Cs"])),
        metadata=st.dictionaries(st.text(max_size=5), st.integers() | st.text(), max_size=3),
    )
    def test_body_is_the_json_of_the_documented_fields(
        self, *, legacy, credential, text, conv_id, context, metadata
    ):
        """The body, built from pieces, is exactly the compact JSON of the fields in order."""
        scenario_id = 's"\u00e9\\'
        made = ClientConfig.build(
            token=Secret(None if legacy else credential),
            api_key=Secret(credential if legacy else None),
            scenario_id=scenario_id,
            base_url=None,
            timeout=NOT_GIVEN,
            max_retries=0,
            retry_ambiguous=False,
            deadline=None,
            default_headers=None,
            max_connections=1,
            max_response_bytes=1024,
        )
        fields = {"api_key": credential} if legacy else {}
        fields["scenario_id"] = scenario_id
        fields |= {"conv_id": conv_id, "text": text, "message_context": context}
        fields = {key: value for key, value in fields.items() if value is not None}
        if metadata:
            fields["client_metadata"] = metadata

        request = encode(
            made, text=text, conv_id=conv_id, client_metadata=metadata, message_context=context
        )

        assert (
            request.body == json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        )

    @pytest.mark.parametrize(
        "value",
        [2**64, -(2**63) - 1, 10**40, _nested("deep", MAX_JSON_DEPTH - 1)],
        ids=["2**64", "below -2**63", "10**40", "nested as deep as allowed"],
    )
    def test_any_json_metadata_is_sent(self, value):
        """Metadata the rules accept as JSON is sent, even where a fast encoder would give up.

        JSON numbers have no size limit, and nesting is bounded by the rules' own check
        (`MAX_JSON_DEPTH` levels, the metadata mapping included).
        """
        check_metadata({"n": value})

        request = encode(config(), text="hi", client_metadata={"n": value})

        assert json.loads(request.body)["client_metadata"] == {"n": value}
        assert request.body.startswith(b'{"scenario_id":"scn-42","text":"hi",')

    def test_limits_of_the_attempt(self):
        """The request carries the client's timeout and body limit."""
        made = config(timeout=Timeout(total=7, connect=1), max_response_bytes=4096)

        request = encode(made, text="hi")

        assert (request.timeout, request.max_response_bytes) == (Timeout(total=7, connect=1), 4096)

    def test_metadata_no_longer_json(self):
        """Metadata that stopped being JSON since it was checked is refused, with no credential."""
        with pytest.raises(ValidationError, match="cannot be sent as JSON") as info:
            encode(config(legacy=True), text="hi", client_metadata={"x": object()})  # type: ignore[dict-item]

        assert API_KEY not in str(info.value)

    def test_repr_shows_only_the_url(self):
        """A prepared request carries the credential, and its repr does not."""
        request = encode(config(), text="hi")

        assert repr(request) == f"<ChatRequest POST {URL}>"
        assert ChatRequest("http://127.0.0.1:9/chat", {}, b"{}").timeout == Timeout()


# --- the reply -----------------------------------------------------------------------------


class TestDecodeReply:
    def test_fields(self):
        """The reply's fields come back typed; text is plain, html as sent."""
        html = "Line one<br>Line <b>two</b> &amp; more"
        body = reply_body(reply=html, conv_id="conv-1", ord_number=7, src=0)

        reply = decode_reply(
            response(200, body), config=config(), conv_id=None, attempts=2, elapsed=1.5
        )

        assert reply == Reply(conv_id="conv-1", html=html, ord_number=7, src=0)
        assert reply.text == "Line one\nLine two & more"
        assert reply.raw["reply"] == html
        assert (reply.attempts, reply.elapsed) == (2, 1.5)

    def test_legacy_continuation_without_conv_id(self):
        """A reply without conv_id (the legacy continuation example) keeps the one sent."""
        body = reply_body(ord_number=236, reply="Hey, great to hear from you again!")

        reply = decode_reply(response(200, body), config=config(legacy=True), conv_id="abcd1234")

        assert (reply.conv_id, reply.ord_number, reply.src) == ("abcd1234", 236, None)

    def test_odd_types_dropped(self):
        """ord_number or src of the wrong type are dropped, not trusted."""
        body = reply_body(reply="hi", conv_id="c", ord_number="3", src=True)

        reply = decode_reply(response(200, body), config=config(), conv_id=None)

        assert (reply.ord_number, reply.src) == (None, None)

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            (b"<html>hello</html>", "its body is not JSON"),
            (b"", "its body is not JSON"),
            (b"\xff\xfe{}", "its body is not JSON"),
            (b'["a list"]', "not a JSON object"),
            (reply_body(conv_id="c"), "no 'reply'"),
            (reply_body(conv_id="c", reply=5), "no 'reply'"),
            (reply_body(reply="hi"), "no conv_id"),
            (reply_body(reply="hi", conv_id=5), "no conv_id"),
            (reply_body(reply="hi", conv_id=""), "no conv_id"),
        ],
    )
    @pytest.mark.parametrize("status", [200, 201])
    def test_unexpected_2xx(self, body, match, status):
        """A 2xx that is not the documented JSON: UnexpectedResponseError, outcome unknown."""
        with pytest.raises(UnexpectedResponseError, match=match) as info:
            decode_reply(response(status, body), config=config(), conv_id=None)

        error = info.value
        assert type(error) is UnexpectedResponseError
        assert error.outcome_unknown
        assert error.status_code == status
        assert f"answered {status} but" in error.message
        assert len(error.body) <= MAX_QUOTED_CHARS

    def test_unexpected_body_masks_the_credential(self):
        """A body that echoes the api_key is quoted with *** in its place."""
        body = b"Bad request from " + API_KEY.encode()

        with pytest.raises(UnexpectedResponseError) as info:
            decode_reply(response(200, body), config=config(legacy=True), conv_id=None)

        assert API_KEY not in info.value.message
        assert info.value.body == "Bad request from ***"

    def test_truncated_body(self):
        """A body longer than max_response_bytes is refused, naming the limit."""
        made = config(max_response_bytes=1024)
        cut = response(200, reply_body(reply="x" * 5000, conv_id="c")[:1024], truncated=True)

        with pytest.raises(ResponseTooLargeError, match="max_response_bytes=1024") as info:
            decode_reply(cut, config=made, conv_id=None)

        assert info.value.outcome_unknown
        assert info.value.status_code == 200

    def test_error_status(self):
        """A status that is not 2xx is raised as the error it means, counting the attempts."""
        with pytest.raises(RateLimitError, match="after 3 attempts"):
            decode_reply(response(429), config=config(), conv_id=None, attempts=3)

    @hypothesis.settings(max_examples=300, deadline=None)
    @given(
        body=st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda children: st.lists(children) | st.dictionaries(st.text(), children),
            max_leaves=10,
        ).map(lambda value: json.dumps(value, ensure_ascii=False).encode())
        | st.binary().map(lambda value: b"{" + value),
        tail=st.sampled_from([b"", b" \r\n\t", b" x", b"}", b"\x0c"]),
    )
    def test_refuses_exactly_what_is_not_json(self, body, tail):
        """The decoder says 'not JSON' exactly when the body is not a JSON text (RFC 8259).

        A JSON text is UTF-8, with no NaN or Infinity, and no lone surrogate in its strings:
        what `json.loads` takes beyond that is not JSON and is refused too.
        """
        data = body + tail
        try:
            value = json.loads(data.decode("utf-8"), parse_constant=_refuse)
            json.dumps(value).encode("utf-8")  # no lone surrogate in any string
            is_json = not _infinite(value)
        except (ValueError, UnicodeError):
            is_json = False

        try:
            decode_reply(response(200, data), config=config(), conv_id="c")
        except UnexpectedResponseError as exc:
            refused = "its body is not JSON" in exc.message
        else:
            refused = False

        assert refused is not is_json


def _refuse(name: str) -> object:
    raise ValueError(name)


def _infinite(value: object) -> bool:
    """Whether a decoded number overflowed to infinity (1e400 is no finite JSON number)."""
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, list):
        return any(_infinite(item) for item in value)
    if isinstance(value, dict):
        return any(_infinite(item) for item in value.values())
    return False


# --- from status and text to an error ------------------------------------------------------


class TestErrorFromResponse:
    @pytest.mark.parametrize(
        ("status", "text", "error"),
        [
            (400, "Missing required parameter: scenario_id", BadRequestError),
            (400, "Request is not authenticated", AuthenticationError),
            (400, "Authentication credentials were not provided.", AuthenticationError),
            (400, "Conversation conv_id conv-9 is not valid.", ConversationNotFoundError),
            (400, "client_metadata accepts at most 5 keys", BadRequestError),
            (404, "No implementation found for scenario_id scn-42", ScenarioNotFoundError),
            (403, "Forbidden", PermissionDeniedError),
            (429, "Too Many Requests", RateLimitError),
            (500, "Internal Server Error", InternalServerError),
            (502, "Bad Gateway", InternalServerError),
            (504, "", InternalServerError),
            (503, "Service Unavailable", ServiceUnavailableError),
            (418, "I'm a teapot", APIStatusError),
            (409, "", APIStatusError),
        ],
    )
    def test_current_flavor(self, status, text, error):
        """Every documented status and text of the current flavor maps to its error."""
        exc = error_from_response(response(status, text), url=URL, secrets=(TOKEN,))

        assert type(exc) is error
        assert exc.status_code == status
        assert exc.server_message == text
        assert exc.response.status_code == status
        if text:
            assert repr(text) in exc.message

    @pytest.mark.parametrize(
        ("status", "text", "error"),
        [
            (400, "Required parameters are: api_key, scenario_id, text", BadRequestError),
            (400, "conv_id abcd1234 does not exist", ConversationNotFoundError),
            (400, "conv_id abcd1234 n'existe pas", ConversationNotFoundError),
            (400, "The message_context limit is 1000 characters", BadRequestError),
            (401, "Unauthorized", AuthenticationError),
            (401, "", AuthenticationError),
            (500, "Internal Server Error", InternalServerError),
            (503, "Service Unavailable", ServiceUnavailableError),
        ],
    )
    def test_legacy_flavor(self, status, text, error):
        """Every documented status and text of the legacy flavor maps to its error."""
        assert type(error_from_response(response(status, text), url=URL)) is error

    @pytest.mark.parametrize(
        ("status", "text", "advice"),
        [
            (400, "Conversation conv_id conv-9 is not valid.", "Omit conv_id to start a new"),
            (401, "Unauthorized", "Check the API token (current flavor) or api_key"),
            (400, "Missing required parameter: text", "at most 1000 characters"),
            (403, "Forbidden", "API access of your plan"),
            (404, "No implementation found", f"requests go to {URL}"),
            (500, "oops", "did not resend it"),
            (418, "", "does not document"),
        ],
    )
    def test_messages_say_what_to_do(self, status, text, advice):
        """A documented error's message quotes the server and says what to do next."""
        assert advice in error_from_response(response(status, text), url=URL).message

    def test_outcome_unknown_by_status(self):
        """5xx may have been recorded, 503 was not processed, 4xx were refused."""
        assert error_from_response(response(500), url=URL).outcome_unknown
        assert error_from_response(response(502), url=URL).outcome_unknown
        assert not error_from_response(response(503), url=URL).outcome_unknown
        assert not error_from_response(response(429), url=URL).outcome_unknown
        assert not error_from_response(response(400), url=URL).outcome_unknown

    def test_echoed_credential_masked(self):
        """If the server echoes the token, the error shows *** instead."""
        exc = error_from_response(response(400, f"Bad token {TOKEN}"), url=URL, secrets=(TOKEN,))

        assert TOKEN not in str(exc)
        assert exc.server_message == "Bad token ***"

    def test_html_error_page_trimmed(self):
        """A proxy's HTML 502 page becomes its title, not a page of markup."""
        page = (
            "<html><head><title>502 Bad Gateway</title><style>body{}</style></head>"
            "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
            + "<!-- padding -->" * 500
            + "</body></html>"
        )

        exc = error_from_response(response(502, page, content_type="text/html"), url=URL)

        assert exc.server_message == "502 Bad Gateway"
        assert exc.outcome_unknown
        assert len(str(exc)) < 400

    def test_large_error_body_quoted_briefly(self):
        """However long the body, the quote stays within a few hundred characters."""
        exc = error_from_response(response(400, "bad " * 100_000), url=URL)

        assert len(exc.server_message) <= MAX_QUOTED_CHARS
        assert exc.server_message.endswith("…")

    def test_redirect(self):
        """A 3xx names its target (credential masked) and says redirects are not followed."""
        target = f"https://evil.example/chat?k={TOKEN}"

        exc = error_from_response(response(307, location=target), url=URL, secrets=(TOKEN,))

        assert type(exc) is APIStatusError
        assert "does not follow redirects" in exc.message
        assert "https://evil.example/chat?k=***" in exc.message

    @pytest.mark.parametrize(
        ("status", "error"), [(429, RateLimitError), (503, ServiceUnavailableError)]
    )
    def test_retry_after(self, status, error):
        """A 429 or 503 carries the wait it asked for, and says it, with the attempts made."""
        exc = error_from_response(response(status, retry_after="120"), url=URL, attempts=3)

        assert type(exc) is error
        assert exc.retry_after == 120  # type: ignore[attr-defined]
        assert "It asked to wait 120 s." in exc.message
        assert "(after 3 attempts)" in exc.message
        assert "attempts" not in error_from_response(response(status), url=URL).message

    def test_headers_read_case_insensitively(self):
        """A Retry-After in any spelling is read (through the response's own headers)."""
        import httpx2  # noqa: PLC0415 -- only for its case-insensitive headers

        exc = error_from_response(
            HTTPResponse(429, httpx2.Headers({"Retry-After": "5"}), b""), url=URL
        )

        assert exc.retry_after == 5  # type: ignore[attr-defined]


class TestQuoteServerText:
    def test_whitespace_collapsed_and_cut(self):
        """Long texts are cut to a bounded, single-line quote."""
        quoted = quote_server_text("word\n\t " * 1000)

        assert "\n" not in quoted
        assert len(quoted) <= MAX_QUOTED_CHARS

    def test_secrets_masked(self):
        """Known credentials are replaced by ***; an empty one masks nothing."""
        assert quote_server_text("bad key k-123", secrets=("k-123", "")) == "bad key ***"

    def test_html_page_reduced(self):
        """An HTML page without a title is reduced to its text, entities decoded."""
        page = "<html><script>var x=1;</script><body><h1>Bad&nbsp;Gateway</h1></body></html>"

        assert quote_server_text(page) == "Bad Gateway"

    def test_plain_text_kept(self):
        """A documented plain-text error is quoted as it is."""
        assert quote_server_text("conv_id 1 < 2 does not exist") == "conv_id 1 < 2 does not exist"

    @given(st.text(), st.text(min_size=4))
    def test_never_raises_never_leaks(self, text, secret):
        """Any body quotes safely: bounded, and the secret never appears verbatim."""
        quoted = quote_server_text(text + secret + text, secrets=(secret,))

        assert len(quoted) <= MAX_QUOTED_CHARS
        if secret.strip() and "*" not in secret and secret == " ".join(secret.split()):
            assert secret not in quoted


class TestParseRetryAfter:
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
            ("99999999999999999999999", CEILING),
            ("Mon, 32 Foo 2026 99:99:99 GMT", None),
            ("Wed, 21 Oct 2015 07:28:00", None),
        ],
    )
    def test_values(self, value, expected):
        """Seconds are read; garbage, negatives and zone-less dates ignored; huge values capped."""
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

        assert result is None or 0 <= result <= CEILING


# --- transport failures ----------------------------------------------------------------------


class TestConnectionErrors:
    def test_unsent(self):
        """A failure before sending says so: the message was not sent, safe to try again."""
        error = connection_error(
            url=URL, action="could not connect to", cause=OSError("refused"), sent=False
        )

        assert type(error) is APIConnectionError
        assert not error.outcome_unknown
        assert error.url == URL
        assert error.message == (
            f"The SDK could not connect to {URL} (OSError: refused). The message was not sent. "
            "Check base_url and the network, then try again."
        )

    def test_maybe_sent(self):
        """A failure after sending says the message may have been recorded, and was not resent."""
        error = connection_error(
            url=URL, action="lost the connection to", cause=OSError(), sent=True, timeout=True
        )

        assert type(error) is APITimeoutError
        assert error.outcome_unknown
        assert f"lost the connection to {URL} (OSError)." in error.message
        assert "may or may not have recorded the message" in error.message

    @pytest.mark.parametrize("verify", [True, False])
    def test_tls_failure_behind_a_silent_error(self, verify):
        """An engine error without a message borrows the TLS error's behind it.

        A certificate that no trusted authority signed also says how to trust one.
        """
        tls = (
            ssl.SSLCertVerificationError(1, "certificate verify failed")
            if verify
            else (ssl.SSLError(1, "wrong version number"))
        )
        silent = ConnectionError()  # as an engine raises it: `raise ... from None`, in a handler
        silent.__context__, silent.__suppress_context__ = OSError(), True
        silent.__context__.__cause__ = tls

        error = connection_error(url=URL, action="could not connect to", cause=silent, sent=False)

        assert f"(ConnectionError: {tls})" in error.message
        assert ("point SSL_CERT_FILE at its bundle" in error.message) is verify
        assert error.message.endswith("Check base_url and the network, then try again.")

    def test_the_callers_own_tls_error_is_not_borrowed(self):
        """An error raised while the caller handled its own TLS error does not take its text."""
        refused = ConnectionRefusedError()
        refused.__context__ = ssl.SSLCertVerificationError(1, "the caller's own, unrelated")

        error = connection_error(url=URL, action="could not connect to", cause=refused, sent=False)

        assert "(ConnectionRefusedError)" in error.message
        assert "unrelated" not in error.message
        assert "SSL_CERT_FILE" not in error.message

    def test_deadline(self):
        """The per-attempt deadline is an APITimeoutError that names it."""
        error = deadline_error(url=URL, cause=TimeoutError(), sent=False)

        assert type(error) is APITimeoutError
        assert "per-attempt deadline" in error.message
        assert not error.outcome_unknown

    def test_slot_timeout(self):
        """No connection slot before the deadline: unsent, and what to change."""
        error = slot_timeout_error(url=URL, total=0.5, slots=3)

        assert type(error) is APITimeoutError
        assert not error.outcome_unknown
        assert "after 0.5 s waiting for one of its 3 connection slots" in error.message
        assert "Raise max_connections or the timeout" in error.message

    def test_classify_takes_the_first_matching_row(self):
        """Rows are tried most specific first; each table says whether its errors may be sent."""

        class SpecificError(ConnectionError):
            pass

        tables = (
            (((SpecificError, "timed out connecting to"),), False),
            (((ConnectionError, "lost the connection to"),), True),
        )

        specific = classify(
            SpecificError(), url=URL, tables=tables, timeout=True, otherwise_sent=True
        )
        general = classify(
            ConnectionError(), url=URL, tables=tables, timeout=False, otherwise_sent=True
        )
        other = classify(KeyError(), url=URL, tables=tables, timeout=False, otherwise_sent=False)

        assert type(specific) is APITimeoutError
        assert "timed out connecting to" in specific.message
        assert not specific.outcome_unknown
        assert type(general) is APIConnectionError
        assert "lost the connection to" in general.message
        assert general.outcome_unknown
        assert "failed talking to" in other.message
        assert not other.outcome_unknown


# --- the retry policy ------------------------------------------------------------------------


def _status_error(cls: type[APIStatusError], status: int, **extra: object) -> APIStatusError:
    return cls("x", status_code=status, server_message="", response=response(status), **extra)  # type: ignore[arg-type]


class TestRetryDelay:
    @pytest.mark.parametrize("cls", [RateLimitError, ServiceUnavailableError])
    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [(7, 7), (0.0, 0.0), (MAX_RETRY_AFTER, MAX_RETRY_AFTER), (None, True), (60.5, False)],
    )
    def test_the_server_asked_to_wait(self, cls, retry_after, expected):
        """A 429 or 503 waits as Retry-After asks (up to 60 s), backs off without it, or raises."""
        status = 429 if cls is RateLimitError else 503
        exc = _status_error(cls, status, retry_after=retry_after)

        assert retry_delay(exc, retry_ambiguous=False) == expected
        assert retry_delay(exc, retry_ambiguous=True) == expected

    @pytest.mark.parametrize(
        ("exc", "safe"),
        [
            (APIConnectionError("x", url=URL, outcome_unknown=False), True),
            (APITimeoutError("x", url=URL, outcome_unknown=False), True),
            (APIConnectionError("x", url=URL, outcome_unknown=True), False),
            (APITimeoutError("x", url=URL, outcome_unknown=True), False),
            (_status_error(InternalServerError, 500), False),
            (UnexpectedResponseError("x", status_code=200, body=""), False),
            (ResponseTooLargeError("x", status_code=200, body=""), False),
        ],
    )
    def test_only_what_cannot_have_landed(self, exc, safe):
        """Unsent failures are retried; ambiguous ones only with retry_ambiguous."""
        assert retry_delay(exc, retry_ambiguous=False) is safe
        assert retry_delay(exc, retry_ambiguous=True) is True

    @pytest.mark.parametrize(
        "exc",
        [
            _status_error(BadRequestError, 400),
            _status_error(AuthenticationError, 401),
            _status_error(PermissionDeniedError, 403),
            _status_error(ScenarioNotFoundError, 404),
            _status_error(APIStatusError, 409),
            _status_error(APIStatusError, 307),
            ValidationError("x"),
            QuickchatError("x"),
            RuntimeError("x"),
        ],
    )
    def test_never(self, exc):
        """A refusal, bad input or anything else is final, whatever retry_ambiguous says."""
        assert retry_delay(exc, retry_ambiguous=True) is False
