"""AsyncQuickchat: configuration, lifecycle, the two flavors' requests, and the error mapping."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import hypothesis
import pytest
import respx
from hypothesis import strategies as st

from quickchat_async import (
    NOT_GIVEN,
    APIStatusError,
    AsyncQuickchat,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConversationNotFoundError,
    Flavor,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    Timeout,
    UnexpectedResponseError,
    ValidationError,
)
from quickchat_async._version import __version__

from .conftest import (
    API_KEY,
    CURRENT_URL,
    LEGACY_URL,
    SCENARIO_ID,
    TOKEN,
    chat_reply,
    library_frames_with_locals,
    sent_json,
)


pytestmark = pytest.mark.anyio

MakeClient = Callable[..., AsyncQuickchat]


class NeverSends:
    """A transport for tests that only build requests."""

    async def send(self, request: object, /) -> object:
        raise AssertionError("not sent in this test")

    async def aclose(self) -> None:
        pass


class TestConfiguration:
    def test_token_selects_current_flavor(self):
        """A token means Bearer auth against app.quickchat.ai."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)

        assert client.flavor is Flavor.CURRENT
        assert client.base_url == CURRENT_URL
        assert client.scenario_id == SCENARIO_ID

    def test_api_key_selects_legacy_flavor(self):
        """An api_key means the legacy flavor against chat.quickchat.ai."""
        client = AsyncQuickchat(api_key=API_KEY, scenario_id=SCENARIO_ID)

        assert client.flavor is Flavor.LEGACY
        assert client.base_url == LEGACY_URL

    def test_environment_fallback(self, monkeypatch):
        """Unset arguments come from the QUICKCHAT_* variables."""
        monkeypatch.setenv("QUICKCHAT_API_KEY", API_KEY)
        monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "from-env")
        monkeypatch.setenv("QUICKCHAT_BASE_URL", "http://127.0.0.1:8765")

        client = AsyncQuickchat()

        assert client.flavor is Flavor.LEGACY
        assert client.scenario_id == "from-env"
        assert client.base_url == "http://127.0.0.1:8765"

    def test_explicit_credential_beats_environment(self, monkeypatch):
        """An explicit api_key is not 'both' just because QUICKCHAT_API_TOKEN is set."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)

        client = AsyncQuickchat(api_key=API_KEY, scenario_id=SCENARIO_ID)

        assert client.flavor is Flavor.LEGACY

    def test_no_credential(self):
        """Neither token nor api_key is a clear ValidationError naming both ways."""
        with pytest.raises(ValidationError, match=r"QUICKCHAT_API_TOKEN.*QUICKCHAT_API_KEY"):
            AsyncQuickchat(scenario_id=SCENARIO_ID)

    def test_both_credentials(self):
        """A token and an api_key together are refused, without echoing either."""
        with pytest.raises(ValidationError, match="not both") as info:
            AsyncQuickchat(token=TOKEN, api_key=API_KEY, scenario_id=SCENARIO_ID)

        assert TOKEN not in str(info.value)
        assert API_KEY not in str(info.value)

    def test_both_credentials_in_environment(self, monkeypatch):
        """Both variables set is refused too, and the message names them."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)
        monkeypatch.setenv("QUICKCHAT_API_KEY", API_KEY)

        with pytest.raises(ValidationError, match="both set"):
            AsyncQuickchat(scenario_id=SCENARIO_ID)

    @pytest.mark.parametrize("scenario_id", [None, "", "   "])
    def test_missing_scenario_id(self, scenario_id):
        """No scenario_id is a ValidationError that says where to put it."""
        with pytest.raises(ValidationError, match="QUICKCHAT_SCENARIO_ID"):
            AsyncQuickchat(token=TOKEN, scenario_id=scenario_id)

    @pytest.mark.parametrize("token", ["", "  ", "abc\n", 42])
    def test_bad_token(self, token):
        """An empty, multi-line or non-string token is refused at construction."""
        with pytest.raises(ValidationError, match="token"):
            AsyncQuickchat(token=token, scenario_id=SCENARIO_ID)

    @pytest.mark.parametrize(
        ("base_url", "expected"),
        [
            ("https://example.com", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("https://example.com/chat", "https://example.com"),
            ("https://example.com/proxy/chat/", "https://example.com/proxy"),
            ("http://localhost:8765", "http://localhost:8765"),
            ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
            ("http://[::1]:8765", "http://[::1]:8765"),
        ],
    )
    def test_base_url_normalised(self, base_url, expected):
        """Requests go to {base_url}/chat; a trailing slash or /chat is not doubled."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=base_url)

        assert client.base_url == expected

    @pytest.mark.parametrize(
        "base_url",
        ["http://example.com", "http://10.0.0.1:80", "http://quickchat.ai.localhost.evil.com"],
    )
    def test_plain_http_refused_off_loopback(self, base_url):
        """http:// to a non-loopback host is refused: the token would travel in clear text."""
        with pytest.raises(ValidationError, match="clear text"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=base_url)

    def test_credentials_in_base_url_refused(self):
        """user:password@host in the base URL is refused, without echoing the password."""
        with pytest.raises(ValidationError, match="embed credentials") as info:
            AsyncQuickchat(
                token=TOKEN, scenario_id=SCENARIO_ID, base_url="https://me:s3cr3t@example.com"
            )

        assert "s3cr3t" not in str(info.value)

    @pytest.mark.parametrize(
        "base_url", ["ftp://example.com", "example.com", "https://example.com/?x=1", 7]
    )
    def test_bad_base_url(self, base_url):
        """Non-http(s), host-less or query-carrying base URLs are refused."""
        with pytest.raises(ValidationError, match="base_url"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=base_url)

    def test_default_timeout(self):
        """By default an attempt has 30 s in all and 5 s to connect."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, timeout=NOT_GIVEN)
        request = client._request("hi", None, {}, None)

        assert request.timeout == Timeout(total=30.0, connect=5.0)

    @pytest.mark.parametrize(
        ("timeout", "expected"),
        [
            (None, Timeout(total=None, connect=None)),
            (10, Timeout(total=10.0, connect=5.0)),
            (2.5, Timeout(total=2.5, connect=2.5)),
            (Timeout(total=60, connect=1), Timeout(total=60, connect=1)),
        ],
    )
    def test_timeout_values(self, timeout, expected):
        """None must be asked for explicitly; a number bounds the attempt and the connect."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, timeout=timeout)

        assert client._request("hi", None, {}, None).timeout == expected

    @pytest.mark.parametrize("timeout", [0, -1, float("nan"), "30", True])
    def test_bad_timeout(self, timeout):
        """A timeout that is not a positive number is a ValidationError."""
        with pytest.raises(ValidationError, match=r"[Tt]imeout"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, timeout=timeout)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("max_retries", -1),
            ("max_retries", 1.5),
            ("max_retries", True),
            ("max_connections", 0),
            ("max_response_bytes", 10),
        ],
    )
    def test_bad_limits(self, name, value):
        """Retry and size limits must be sensible integers."""
        with pytest.raises(ValidationError, match=name):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, **{name: value})

    @pytest.mark.parametrize(
        "headers", [{"Authorization": "Bearer other"}, {"X-Ok": 1}, {"Host": "evil"}, ["x"]]
    )
    def test_bad_default_headers(self, headers):
        """default_headers may not override auth or carry non-strings."""
        with pytest.raises(ValidationError, match="default_headers"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, default_headers=headers)

    def test_http_client_and_transport_exclusive(self):
        """http_client and transport cannot both be given."""
        with pytest.raises(ValidationError, match="not both"):
            AsyncQuickchat(
                token=TOKEN,
                scenario_id=SCENARIO_ID,
                http_client=httpx.AsyncClient(),
                transport="httpx",
            )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"transport": "carrier-pigeon"}, "Unknown transport"),
            ({"transport": object()}, "send"),
            ({"http_client": object()}, "httpx.AsyncClient"),
        ],
    )
    def test_bad_transport(self, kwargs, match):
        """An unknown transport name or object is refused."""
        with pytest.raises(ValidationError, match=match):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, **kwargs)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"token": TOKEN, "api_key": API_KEY, "scenario_id": SCENARIO_ID},
            {"token": TOKEN},
            {"token": TOKEN + "\n", "scenario_id": SCENARIO_ID},
            {"api_key": API_KEY, "scenario_id": SCENARIO_ID, "base_url": "http://example.com"},
        ],
    )
    def test_construction_tracebacks_hide_credentials(self, kwargs):
        """A failed construction formatted with locals shows no credential."""
        with pytest.raises(ValidationError) as info:
            AsyncQuickchat(**kwargs)

        formatted = library_frames_with_locals(info.value)
        assert TOKEN not in formatted
        assert API_KEY not in formatted

    def test_repr_hides_credentials(self):
        """The repr names flavor, URL and scenario, never the token or api_key."""
        current = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)
        legacy = AsyncQuickchat(api_key=API_KEY, scenario_id=SCENARIO_ID)

        assert repr(current) == (
            "<AsyncQuickchat flavor='current' url='https://app.quickchat.ai/chat' "
            "scenario_id='scn-42' state='unopened'>"
        )
        assert API_KEY not in repr(legacy)
        assert TOKEN not in repr(current._request("hi", None, {}, None))


class TestLifecycle:
    async def test_context_manager_closes_owned_client(self):
        """`async with` opens the client and closes the connections it owns."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)

        async with client as entered:
            assert entered is client
            assert not client.is_closed

        assert client.is_closed
        assert client.transport.client.is_closed  # type: ignore[attr-defined]

    async def test_aclose_is_idempotent(self):
        """Closing twice is harmless."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)

        await client.aclose()
        await client.aclose()

        assert client.is_closed

    async def test_use_after_close(self, client: AsyncQuickchat):
        """say() on a closed client raises ClientClosedError and sends nothing."""
        await client.aclose()

        with pytest.raises(ClientClosedError, match="closed"):
            await client.say("Hello!")

    async def test_reopen_refused(self):
        """A closed client cannot be entered again."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)
        await client.aclose()

        with pytest.raises(ClientClosedError):
            async with client:
                pass

    async def test_caller_owned_http_client_stays_open(self, router):
        """The SDK never closes an httpx client it was given."""
        router.post("/chat").mock(return_value=chat_reply())
        http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))

        async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http) as c:
            await c.say("Hello!")

        assert not http.is_closed
        await http.aclose()


class TestRequests:
    async def test_current_flavor_request(self, client: AsyncQuickchat, router: respx.Router):
        """The current flavor sends a Bearer header and the documented body, nothing more."""
        route = router.post("/chat").mock(return_value=chat_reply())

        await client.say(
            "Hello!",
            conv_id="conv-uuid-1234",
            client_metadata={"userId": 12, "website": "mywebsite.com"},
            message_context="The user's name is John.",
        )

        request = route.calls.last.request
        assert request.url == "https://app.quickchat.ai/chat"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith(f"quickchat-async/{__version__} ")
        assert sent_json(request) == {
            "scenario_id": SCENARIO_ID,
            "conv_id": "conv-uuid-1234",
            "text": "Hello!",
            "message_context": "The user's name is John.",
            "client_metadata": {"userId": 12, "website": "mywebsite.com"},
        }
        assert "api_key" not in request.content.decode()

    async def test_current_flavor_minimal_body(self, client, router):
        """A first message carries only scenario_id and text."""
        route = router.post("/chat").mock(return_value=chat_reply())

        await client.say("Hello!")

        assert sent_json(route.calls.last.request) == {"scenario_id": SCENARIO_ID, "text": "Hello!"}

    async def test_legacy_flavor_request(self, legacy: AsyncQuickchat, legacy_router):
        """The legacy flavor puts api_key first in the body and sends no Authorization."""
        route = legacy_router.post("/chat").mock(return_value=chat_reply())

        await legacy.say(
            "Hello!",
            conv_id="abcd1234",
            message_context="The users name is John.",
            client_metadata={"kb_topic": "your-topic"},
        )

        request = route.calls.last.request
        assert request.url == "https://chat.quickchat.ai/chat"
        assert "authorization" not in request.headers
        assert list(sent_json(request)) == [
            "api_key",
            "scenario_id",
            "conv_id",
            "text",
            "message_context",
            "client_metadata",
        ]
        assert sent_json(request) == {
            "api_key": API_KEY,
            "scenario_id": SCENARIO_ID,
            "conv_id": "abcd1234",
            "text": "Hello!",
            "message_context": "The users name is John.",
            "client_metadata": {"kb_topic": "your-topic"},
        }

    async def test_unicode_and_escaping(self, legacy, legacy_router):
        """Quotes, newlines and non-ASCII text survive the body encoding, api_key included."""
        route = legacy_router.post("/chat").mock(return_value=chat_reply())

        await legacy.say('Zażółć "gęślą" jaźń\n🙂')

        assert sent_json(route.calls.last.request)["text"] == 'Zażółć "gęślą" jaźń\n🙂'
        assert sent_json(route.calls.last.request)["api_key"] == API_KEY

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(
        flavor=st.sampled_from(["token", "api_key"]),
        credential=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1).filter(
            lambda value: value.strip() and not any(c in value for c in "\r\n\x00")
        ),
        text=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1),
        conv_id=st.none() | st.text(st.characters(blacklist_categories=["Cs"]), min_size=1),
        context=st.none() | st.text(st.characters(blacklist_categories=["Cs"])),
        metadata=st.dictionaries(st.text(max_size=5), st.integers() | st.text(), max_size=3),
    )
    def test_body_is_the_json_of_the_documented_fields(
        self, *, flavor, credential, text, conv_id, context, metadata
    ):
        """The body, built piece by piece, is exactly the compact JSON of the fields in order."""
        client = AsyncQuickchat(
            scenario_id='s"\u00e9\\', transport=NeverSends(), **{flavor: credential}
        )
        fields = {"api_key": credential} if flavor == "api_key" else {}
        fields["scenario_id"] = client.scenario_id
        fields |= {"conv_id": conv_id, "text": text, "message_context": context}
        fields = {key: value for key, value in fields.items() if value is not None}
        if metadata:
            fields["client_metadata"] = metadata

        body = client._request(text, conv_id, metadata, context).body

        assert body == json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()

    async def test_lone_surrogate_refused(self, client, router):
        """Text that cannot be UTF-8 (a lone surrogate) is refused before anything is sent."""
        route = router.post("/chat").mock(return_value=chat_reply())

        with pytest.raises(ValidationError, match="lone surrogate"):
            await client.say("broken \ud800 text")

        assert not route.called

    async def test_metadata_changed_after_it_was_checked(self, client, router):
        """Conversation metadata mutated into something not JSON is refused when sent."""
        route = router.post("/chat").mock(return_value=chat_reply())
        tags: list[object] = ["a"]
        conversation = client.conversation(metadata={"tags": tags})
        tags.append(object())

        with pytest.raises(ValidationError, match="must be JSON"):
            await conversation.say("Hello!")

        assert not route.called

    async def test_default_headers_sent(self, router, make_client):
        """default_headers go out with every request."""
        route = router.post("/chat").mock(return_value=chat_reply())
        client = make_client(router, default_headers={"X-Trace": "abc"})

        await client.say("Hello!")

        assert route.calls.last.request.headers["x-trace"] == "abc"

    async def test_reply_decoded(self, client, router):
        """The reply's fields come back typed; text is plain, html as sent."""
        router.post("/chat").mock(
            return_value=chat_reply("Line one<br>Line <b>two</b> &amp; more", ord_number=7)
        )

        reply = await client.say("Hello!")

        assert reply.conv_id == "conv-1"
        assert reply.text == "Line one\nLine two & more"
        assert reply.html == "Line one<br>Line <b>two</b> &amp; more"
        assert reply.ord_number == 7
        assert reply.src == 0
        assert reply.raw["reply"] == reply.html

    async def test_legacy_continuation_without_conv_id(self, legacy, legacy_router):
        """A reply without conv_id (the legacy continuation example) keeps the one sent."""
        legacy_router.post("/chat").mock(
            return_value=httpx.Response(
                200, json={"ord_number": 236, "reply": "Hey, great to hear from you again!"}
            )
        )

        reply = await legacy.say("Hello!", conv_id="abcd1234")

        assert reply.conv_id == "abcd1234"
        assert reply.ord_number == 236
        assert reply.src is None

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"text": ""}, "empty"),
            ({"text": "   "}, "empty"),
            ({"text": None}, "text must be a string"),
            ({"text": "hi", "conv_id": ""}, "conv_id"),
            ({"text": "hi", "message_context": "x" * 1001}, "1000"),
            ({"text": "hi", "message_context": 5}, "message_context"),
            ({"text": "hi", "client_metadata": {str(i): i for i in range(6)}}, "at most 5"),
            ({"text": "hi", "client_metadata": {1: "x"}}, "keys must be strings"),
            ({"text": "hi", "client_metadata": {"x": {1, 2}}}, "JSON"),
            ({"text": "hi", "client_metadata": {"x": float("nan")}}, "JSON"),
            ({"text": "hi", "client_metadata": "kb_topic=x"}, "mapping"),
        ],
    )
    async def test_validation_before_sending(self, client, router, kwargs, match):
        """Bad input raises ValidationError and no request leaves the SDK."""
        route = router.post("/chat").mock(return_value=chat_reply())

        with pytest.raises(ValidationError, match=match):
            await client.say(**kwargs)

        assert not route.called

    async def test_context_of_exactly_1000_characters(self, client, router):
        """The limit is inclusive: 1000 characters, spaces included, are fine."""
        router.post("/chat").mock(return_value=chat_reply())

        await client.say("hi", message_context=" " * 1000)


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "text", "error"),
        [
            (400, "Missing required parameter: scenario_id", BadRequestError),
            (400, "Request is not authenticated", AuthenticationError),
            (400, "Conversation conv_id conv-9 is not valid.", ConversationNotFoundError),
            (404, "No implementation found for scenario_id scn-42", ScenarioNotFoundError),
            (400, "client_metadata accepts at most 5 keys", BadRequestError),
            (500, "Internal Server Error", InternalServerError),
            (503, "Service Unavailable", ServiceUnavailableError),
            (403, "Forbidden", PermissionDeniedError),
            (429, "Too Many Requests", RateLimitError),
            (418, "I'm a teapot", APIStatusError),
        ],
    )
    async def test_current_flavor_statuses(self, make_client, router, status, text, error):
        """Every documented status and text of the current flavor maps to its error."""
        route = router.post("/chat").mock(
            return_value=httpx.Response(status, text=text, headers={"Retry-After": "120"})
        )
        client = make_client(router)

        with pytest.raises(error) as info:
            await client.say("Hello!")

        exc = info.value
        assert type(exc) is error
        assert exc.status_code == status
        assert exc.server_message == text
        assert repr(text) in exc.message
        assert exc.response.status_code == status
        assert TOKEN not in str(exc)
        assert route.call_count == 1  # never retried (429/503 asked for 120 s: over the cap)

    @pytest.mark.parametrize(
        ("status", "text", "error"),
        [
            (400, "Required parameters are: api_key, scenario_id, text", BadRequestError),
            (400, "conv_id abcd1234 does not exist", ConversationNotFoundError),
            (400, "conv_id abcd1234 n'existe pas", ConversationNotFoundError),
            (400, "The message_context limit is 1000 characters", BadRequestError),
            (401, "Unauthorized", AuthenticationError),
            (500, "Internal Server Error", InternalServerError),
            (503, "Service Unavailable", ServiceUnavailableError),
        ],
    )
    async def test_legacy_flavor_statuses(self, legacy, legacy_router, status, text, error):
        """Every documented status and text of the legacy flavor maps to its error."""
        legacy_router.post("/chat").mock(
            return_value=httpx.Response(status, text=text, headers={"Retry-After": "3600"})
        )

        with pytest.raises(error) as info:
            await legacy.say("Hello!", conv_id="abcd1234")

        assert type(info.value) is error
        assert API_KEY not in str(info.value)

    async def test_messages_say_what_to_do(self, client, router):
        """A documented error's message quotes the server and says what to do next."""
        router.post("/chat").mock(
            return_value=httpx.Response(400, text="Conversation conv_id conv-9 is not valid.")
        )

        with pytest.raises(ConversationNotFoundError) as info:
            await client.say("Hello!", conv_id="conv-9")

        assert "Omit conv_id to start a new conversation" in str(info.value)

    async def test_echoed_credential_masked(self, client, router):
        """If the server echoes the token, the error shows *** instead."""
        router.post("/chat").mock(return_value=httpx.Response(400, text=f"Bad token {TOKEN}"))

        with pytest.raises(BadRequestError) as info:
            await client.say("Hello!")

        assert TOKEN not in str(info.value)
        assert "***" in info.value.server_message

    async def test_html_error_page_trimmed(self, client, router):
        """A proxy's HTML 502 page becomes its title, not a page of markup."""
        page = (
            "<html><head><title>502 Bad Gateway</title><style>body{}</style></head>"
            "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
            + "<!-- padding -->" * 500
            + "</body></html>"
        )
        route = router.post("/chat").mock(
            return_value=httpx.Response(502, text=page, headers={"Content-Type": "text/html"})
        )

        with pytest.raises(InternalServerError) as info:
            await client.say("Hello!")

        assert info.value.server_message == "502 Bad Gateway"
        assert info.value.outcome_unknown
        assert len(str(info.value)) < 400
        assert route.call_count == 1

    async def test_redirect_not_followed(self, client, router):
        """A 3xx is an error, never followed: the credential stays at its origin."""
        route = router.post("/chat").mock(
            return_value=httpx.Response(307, headers={"Location": "https://evil.example/chat"})
        )

        with pytest.raises(APIStatusError, match="does not follow redirects"):
            await client.say("Hello!")

        assert route.call_count == 1

    @pytest.mark.parametrize(
        ("response", "match"),
        [
            (httpx.Response(200, text="<html>hello</html>"), "not JSON"),
            (httpx.Response(200, json=["a list"]), "not a JSON object"),
            (httpx.Response(200, json={"conv_id": "c"}), "no 'reply'"),
            (httpx.Response(200, json={"conv_id": "c", "reply": 5}), "no 'reply'"),
            (httpx.Response(200, json={"reply": "hi"}), "no conv_id"),
            (httpx.Response(200, json={"reply": "hi", "conv_id": 5}), "no conv_id"),
        ],
    )
    async def test_unexpected_2xx(self, client, router, response, match):
        """A 2xx that is not the documented JSON raises UnexpectedResponseError, not retried."""
        route = router.post("/chat").mock(return_value=response)

        with pytest.raises(UnexpectedResponseError, match=match) as info:
            await client.say("Hello!")

        assert info.value.outcome_unknown
        assert route.call_count == 1

    async def test_odd_types_ignored(self, client, router):
        """ord_number or src of the wrong type are dropped, not trusted."""
        router.post("/chat").mock(
            return_value=httpx.Response(
                200, json={"reply": "hi", "conv_id": "c", "ord_number": "3", "src": True}
            )
        )

        reply = await client.say("Hello!")

        assert reply.ord_number is None
        assert reply.src is None

    async def test_response_too_large(self, router, make_client):
        """A body over max_response_bytes is refused, not read into memory."""
        router.post("/chat").mock(
            return_value=httpx.Response(200, json={"reply": "x" * 5000, "conv_id": "c"})
        )
        client = make_client(router, max_response_bytes=1024)

        with pytest.raises(ResponseTooLargeError, match="max_response_bytes=1024"):
            await client.say("Hello!")

    async def test_large_error_body_quoted_briefly(self, router, make_client):
        """A huge error body is read up to the cap and quoted in a few hundred characters."""
        router.post("/chat").mock(return_value=httpx.Response(400, text="bad " * 100_000))
        client = make_client(router, max_response_bytes=2048)

        with pytest.raises(BadRequestError) as info:
            await client.say("Hello!")

        assert len(info.value.server_message) <= 300
        assert len(info.value.response.content) == 2048
        assert info.value.response.truncated


class TestRetries:
    async def test_connect_error_retried(self, client, router):
        """A refused connection cannot have been processed: it is retried, then succeeds."""
        route = router.post("/chat").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), chat_reply()]
        )

        reply = await client.say("Hello!")

        assert reply.text == "Hi there!"
        assert route.call_count == 3

    async def test_retries_are_bounded(self, client, router):
        """After max_retries the connection error surfaces, saying nothing was sent."""
        route = router.post("/chat").mock(side_effect=httpx.ConnectError("refused"))

        with pytest.raises(Exception, match="not sent") as info:
            await client.say("Hello!")

        assert type(info.value).__name__ == "APIConnectionError"
        assert not info.value.outcome_unknown
        assert route.call_count == 3

    async def test_no_retries(self, router, make_client):
        """max_retries=0 sends once."""
        route = router.post("/chat").mock(side_effect=httpx.ConnectError("refused"))
        client = make_client(router, max_retries=0)

        with pytest.raises(Exception, match="not sent"):
            await client.say("Hello!")

        assert route.call_count == 1

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.ReadError("reset"),
            httpx.WriteError("broken pipe"),
        ],
    )
    async def test_ambiguous_failures_not_retried(self, client, router, error):
        """Failures after sending may have been recorded: no retry, outcome_unknown set."""
        route = router.post("/chat").mock(side_effect=error)

        with pytest.raises(Exception, match="may or may not have recorded") as info:
            await client.say("Hello!")

        assert info.value.outcome_unknown
        assert route.call_count == 1

    async def test_500_not_retried(self, client, router):
        """A 500 may come after the message was recorded: not retried by default."""
        route = router.post("/chat").mock(return_value=httpx.Response(500, text="oops"))

        with pytest.raises(InternalServerError):
            await client.say("Hello!")

        assert route.call_count == 1

    async def test_retry_ambiguous_opt_in(self, router, make_client):
        """With retry_ambiguous=True, read timeouts and 5xx are retried too."""
        route = router.post("/chat").mock(
            side_effect=[httpx.ReadTimeout("slow"), httpx.Response(502, text="bad"), chat_reply()]
        )
        client = make_client(router, retry_ambiguous=True)

        reply = await client.say("Hello!")

        assert reply.text == "Hi there!"
        assert route.call_count == 3

    @pytest.mark.parametrize("status", [429, 503])
    async def test_rate_limit_and_unavailable_retried(self, client, router, status):
        """429 and 503 are retried (the server did not process the message)."""
        route = router.post("/chat").mock(
            side_effect=[httpx.Response(status, headers={"Retry-After": "1"}), chat_reply()]
        )

        await client.say("Hello!")

        assert route.call_count == 2

    @pytest.mark.parametrize("status", [429, 503])
    async def test_retry_after_over_cap_raises_at_once(self, client, router, status):
        """A Retry-After beyond 60 s is not slept through: the error carries it."""
        route = router.post("/chat").mock(
            return_value=httpx.Response(status, headers={"Retry-After": "61"})
        )

        with pytest.raises((RateLimitError, ServiceUnavailableError)) as info:
            await client.say("Hello!")

        assert info.value.retry_after == 61  # type: ignore[union-attr]
        assert "61 s" in str(info.value)
        assert route.call_count == 1

    async def test_rate_limit_exhausted(self, client, router):
        """When every attempt is rate-limited, the last RateLimitError says how many tried."""
        router.post("/chat").mock(return_value=httpx.Response(429, headers={"Retry-After": "2"}))

        with pytest.raises(RateLimitError, match="after 3 attempts") as info:
            await client.say("Hello!")

        assert info.value.retry_after == 2

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
    async def test_client_errors_never_retried(self, client, router, status):
        """Other 4xx are final."""
        route = router.post("/chat").mock(return_value=httpx.Response(status, text="no"))

        with pytest.raises(APIStatusError):
            await client.say("Hello!")

        assert route.call_count == 1

    async def test_retry_honours_retry_after(self, client, router):
        """stamina is handed the server's Retry-After as the wait (seconds or HTTP date)."""
        delays = [
            client._retry_delay(exc)
            for exc in (
                RateLimitError(
                    "x",
                    status_code=429,
                    server_message="",
                    response=None,
                    retry_after=7,  # type: ignore[arg-type]
                ),
                ServiceUnavailableError(
                    "x",
                    status_code=503,
                    server_message="",
                    response=None,
                    retry_after=None,  # type: ignore[arg-type]
                ),
                ServiceUnavailableError(
                    "x",
                    status_code=503,
                    server_message="",
                    response=None,
                    retry_after=60.5,  # type: ignore[arg-type]
                ),
            )
        ]

        assert delays == [7, True, False]

    async def test_retries_logged_at_info_without_secrets(self, client, router, caplog):
        """Each retry is logged at INFO on quickchat_async, with no credential or text."""
        router.post("/chat").mock(side_effect=[httpx.ConnectError("refused"), chat_reply()])

        with caplog.at_level(logging.DEBUG, logger="quickchat_async"):
            await client.say("my secret question")

        ours = [r for r in caplog.records if r.name == "quickchat_async"]
        infos = [r for r in ours if r.levelno == logging.INFO]
        assert len(infos) == 1
        assert "attempt 2 of 3" in infos[0].getMessage()
        assert "APIConnectionError" in infos[0].getMessage()
        for record in caplog.records:
            assert TOKEN not in record.getMessage()
            if record.levelno > logging.DEBUG:
                assert "my secret question" not in record.getMessage()
