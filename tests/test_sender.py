"""The client's sending half: settings, lifecycle, both flavors on the wire, retries, slots.

`AsyncQuickchat` is the public face of the sender, so it is what these tests build. HTTP goes
to the fake Chat endpoint through `httpx2.MockTransport`, or, where the test is about what the
sender hands its transport, to a fake transport at the SDK's own seam.
"""

from __future__ import annotations

import json
import logging

import anyio
import httpx2
import pytest
import stamina
import stamina.instrumentation

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncQuickchat,
    BadRequestError,
    ChatRequest,
    ClientClosedError,
    ConversationNotFoundError,
    Flavor,
    HTTPResponse,
    InternalServerError,
    RateLimiter,
    RateLimitError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    Timeout,
    UnexpectedResponseError,
    ValidationError,
    __version__,
)

from .conftest import (
    API_KEY,
    SCENARIO_ID,
    TOKEN,
    FakeChat,
    Landed,
    MakeClient,
    chat_reply,
    error_response,
    library_frames_with_locals,
    sent_json,
)


pytestmark = pytest.mark.anyio

OK_BODY = b'{"conv_id": "c-1", "reply": "Hi!", "ord_number": 3}'


class Held:
    """A transport at the SDK's seam whose sends wait until released, recording each request."""

    def __init__(self, *, hold: int = 1) -> None:
        self.release = anyio.Event()
        self.requests: list[ChatRequest] = []
        self.hold = hold

    @property
    def texts(self) -> list[str]:
        return [json.loads(request.body)["text"] for request in self.requests]

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        self.requests.append(request)
        if len(self.requests) <= self.hold:
            await self.release.wait()
        return HTTPResponse(200, {}, OK_BODY)

    async def aclose(self) -> None:
        pass


def held_client(transport: Held, **options: object) -> AsyncQuickchat:
    return AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport=transport, **options)  # type: ignore[arg-type]


class TestConstruction:
    def test_settings(self):
        """The client shows what it was built with: flavor, scenario, endpoint, limits."""
        limiter = RateLimiter(per_second=5)
        client = AsyncQuickchat(
            api_key=API_KEY,
            scenario_id=SCENARIO_ID,
            timeout=10,
            max_retries=4,
            rate_limiter=limiter,
        )

        assert client.flavor is Flavor.LEGACY
        assert client.scenario_id == SCENARIO_ID
        assert client.base_url == "https://chat.quickchat.ai"
        assert client.timeout == Timeout(total=10, connect=5)
        assert client.max_retries == 4
        assert client.rate_limiter is limiter
        assert client.config.url == "https://chat.quickchat.ai/chat"

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"token": None}, "No credential"),
            ({"scenario_id": None}, "QUICKCHAT_SCENARIO_ID"),
            ({"token": "abc\n"}, "line break"),
            ({"base_url": "http://example.com"}, "clear text"),
            ({"timeout": -1}, "timeout"),
            ({"max_connections": 0}, "max_connections"),
            ({"default_headers": {"Authorization": "x"}}, "default_headers"),
            ({"rate_limiter": 5}, "rate_limiter must be a RateLimiter"),
        ],
    )
    def test_bad_arguments(self, options, match):
        """A bad argument is a ValidationError at construction, naming it."""
        with pytest.raises(ValidationError, match=match):
            AsyncQuickchat(**{"token": TOKEN, "scenario_id": SCENARIO_ID, **options})

    @pytest.mark.parametrize(
        "options",
        [
            {"token": TOKEN, "api_key": API_KEY, "scenario_id": SCENARIO_ID},
            {"token": TOKEN},
            {"token": TOKEN + "\n", "scenario_id": SCENARIO_ID},
            {"api_key": API_KEY, "scenario_id": SCENARIO_ID, "base_url": "http://example.com"},
        ],
    )
    def test_failed_construction_shows_no_credential(self, options):
        """A failed construction formatted with every frame's locals shows no credential."""
        with pytest.raises(ValidationError) as info:
            AsyncQuickchat(**options)

        formatted = library_frames_with_locals(info.value)
        assert TOKEN not in formatted
        assert API_KEY not in formatted

    async def test_repr(self):
        """The repr names flavor, URL, scenario and state, never the token or api_key."""
        current = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)
        legacy = AsyncQuickchat(api_key=API_KEY, scenario_id=SCENARIO_ID)

        assert repr(current) == (
            "<AsyncQuickchat flavor='current' url='https://app.quickchat.ai/chat' "
            "scenario_id='scn-42' state='unopened'>"
        )
        async with current:
            assert "state='opened'" in repr(current)
        assert "state='closed'" in repr(current)
        assert API_KEY not in repr(legacy)
        await legacy.aclose()

    def test_repr_of_a_half_built_client(self):
        """A client whose construction failed still has a repr (tracebacks show it)."""
        assert repr(object.__new__(AsyncQuickchat)) == "<AsyncQuickchat (not configured)>"


class TestLifecycle:
    async def test_context_manager_closes_the_owned_transport(self):
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

    async def test_use_after_close(self, client: AsyncQuickchat, chat: FakeChat):
        """say() on a closed client raises ClientClosedError and sends nothing."""
        await client.aclose()

        with pytest.raises(ClientClosedError, match="closed"):
            await client.say("Hello!")

        assert chat.requests == []

    async def test_reopen_refused(self):
        """A closed client cannot be entered again."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)
        await client.aclose()

        with pytest.raises(ClientClosedError, match="create a new one"):
            async with client:
                pass

    async def test_callers_http_client_stays_open(self, chat: FakeChat):
        """The SDK never closes an http client it was given."""
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(chat))

        async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http) as c:
            await c.say("Hello!")

        assert not http.is_closed
        await http.aclose()

    async def test_closed_while_a_retry_waits(self, make_client: MakeClient, chat: FakeChat):
        """A client closed between attempts makes no further attempt."""
        chat.script(error_response(429, headers={"Retry-After": "0.5"}))
        client = make_client()

        with stamina.set_testing(False):
            async with anyio.create_task_group() as tg:

                async def close_soon() -> None:
                    while not chat.requests:  # noqa: ASYNC110 -- until the first attempt failed
                        await anyio.sleep(0.01)
                    await anyio.wait_all_tasks_blocked()
                    await client.aclose()

                tg.start_soon(close_soon)
                with pytest.raises(ClientClosedError, match="keep talking"):
                    await client.say("Hello!")

        assert len(chat.requests) == 1


class TestWithOptions:
    async def test_other_settings_same_connections(self, make_client: MakeClient, chat: FakeChat):
        """A derived client has its own settings and shares the transport."""
        client = make_client(max_retries=2)
        limiter = RateLimiter(per_second=1000)

        quick = client.with_options(timeout=1, max_retries=0, retry_ambiguous=True)
        limited = client.with_options(rate_limiter=limiter)

        assert quick.transport is client.transport
        assert (quick.timeout, quick.max_retries, quick.config.retry_ambiguous) == (
            Timeout(total=1, connect=1),
            0,
            True,
        )
        assert (limited.max_retries, limited.rate_limiter) == (2, limiter)
        assert client.with_options(rate_limiter=None).rate_limiter is None
        chat.script(httpx2.ConnectError("refused"))
        with pytest.raises(APIConnectionError):
            await quick.say("Hello!")
        assert (await client.say("Hello!")).text

    async def test_closing_a_derived_client(self, make_client: MakeClient):
        """Closing a derived client leaves the connections to the client that owns them."""
        client = make_client()
        derived = client.with_options(max_retries=0)

        await derived.aclose()

        assert derived.is_closed
        assert not client.is_closed
        assert (await client.say("Hello!")).text

    async def test_closing_the_owner(self, make_client: MakeClient):
        """Closing the owner closes every client derived from it."""
        client = make_client()
        derived = client.with_options(max_retries=0)

        await client.aclose()

        assert derived.is_closed
        with pytest.raises(ClientClosedError):
            await derived.say("Hello!")

    def test_bad_options(self):
        """Derived settings are checked as the constructor checks them."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID)

        with pytest.raises(ValidationError, match="max_retries"):
            client.with_options(max_retries=-1)
        with pytest.raises(ValidationError, match="rate_limiter"):
            client.with_options(rate_limiter="fast")  # type: ignore[arg-type]


class TestOnTheWire:
    async def test_current_flavor(self, client: AsyncQuickchat, chat: FakeChat):
        """The current flavor sends a Bearer header and the documented body, nothing more."""
        await client.say(
            "Hello!",
            client_metadata={"userId": 12, "website": "mywebsite.com"},
            message_context="The user's name is John.",
        )

        (request,) = chat.requests
        assert request.url == "https://app.quickchat.ai/chat"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == (
            f"quickchat-async/{__version__} httpx2/{httpx2.__version__}"
        )
        assert sent_json(request) == {
            "scenario_id": SCENARIO_ID,
            "text": "Hello!",
            "message_context": "The user's name is John.",
            "client_metadata": {"userId": 12, "website": "mywebsite.com"},
        }
        assert b"api_key" not in request.content

    async def test_legacy_flavor(self, legacy: AsyncQuickchat, chat: FakeChat):
        """The legacy flavor puts api_key first in the body and sends no Authorization."""
        chat.ords["abcd1234"] = 1

        await legacy.say(
            "Hello!",
            conv_id="abcd1234",
            message_context="The users name is John.",
            client_metadata={"kb_topic": "your-topic"},
        )

        (request,) = chat.requests
        assert request.url == "https://chat.quickchat.ai/chat"
        assert "authorization" not in request.headers
        assert sent_json(request) == {
            "api_key": API_KEY,
            "scenario_id": SCENARIO_ID,
            "conv_id": "abcd1234",
            "text": "Hello!",
            "message_context": "The users name is John.",
            "client_metadata": {"kb_topic": "your-topic"},
        }
        assert next(iter(sent_json(request))) == "api_key"

    async def test_default_headers_sent(self, make_client: MakeClient, chat: FakeChat):
        """default_headers go out with every request."""
        client = make_client(default_headers={"X-Trace": "abc", "User-Agent": "my-bot/1.0"})

        await client.say("Hello!")

        assert chat.requests[0].headers["x-trace"] == "abc"
        assert chat.requests[0].headers.get_list("user-agent") == ["my-bot/1.0"]

    async def test_reply(self, client: AsyncQuickchat, chat: FakeChat):
        """say() returns the decoded reply, with how many attempts it took and how long."""
        reply = await client.say("Hello!")

        assert (reply.conv_id, reply.text, reply.ord_number) == ("conv-1", "You said: Hello!", 3)
        assert reply.attempts == 1
        assert 0 <= reply.elapsed < 5

    async def test_legacy_continuation_without_conv_id(self, make_client: MakeClient):
        """A legacy reply without conv_id is the conversation the request continued."""
        client = make_client(FakeChat(omit_conv_id=True), api_key=API_KEY)

        first = await client.say("Hello!")
        again = await client.say("Again", conv_id=first.conv_id)

        assert again.conv_id == first.conv_id == "conv-1"
        assert "conv_id" not in again.raw

    async def test_send_a_prepared_request(self, client: AsyncQuickchat, chat: FakeChat):
        """send() sends a request made by hand as it is, under the same retry policy."""
        request = ChatRequest(
            client.config.url, client.config.headers, b'{"scenario_id":"scn-42","text":"raw"}'
        )
        chat.script(httpx2.ConnectError("refused"))

        reply = await client.send(request)

        assert reply.text == "You said: raw"
        assert reply.attempts == 2

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"text": ""}, "empty"),
            ({"text": "   "}, "empty"),
            ({"text": None}, "text must be a string"),
            ({"text": "broken \ud800 text"}, "lone surrogate"),
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
    async def test_bad_input_is_never_sent(self, client: AsyncQuickchat, chat, options, match):
        """Bad input raises ValidationError and no request leaves the SDK."""
        with pytest.raises(ValidationError, match=match):
            await client.say(**options)

        assert chat.requests == []

    async def test_context_of_exactly_1000_characters(self, client: AsyncQuickchat, chat):
        """The limit is inclusive: 1000 characters, spaces included, are sent."""
        await client.say("hi", message_context=" " * 1000)

        assert sent_json(chat.requests[0])["message_context"] == " " * 1000


class TestErrors:
    async def test_documented_error(self, client: AsyncQuickchat, chat: FakeChat):
        """A documented refusal is its error, quoting the server and saying what to do."""
        with pytest.raises(ConversationNotFoundError) as info:
            await client.say("Hello!", conv_id="conv-9")

        assert info.value.server_message == "Conversation conv_id conv-9 is not valid."
        assert "Omit conv_id to start a new conversation" in str(info.value)
        assert len(chat.requests) == 1

    async def test_echoed_credential_masked(self, client: AsyncQuickchat, chat: FakeChat):
        """If the server echoes the token, the error shows *** instead."""
        chat.script(error_response(400, f"Bad token {TOKEN}"))

        with pytest.raises(BadRequestError) as info:
            await client.say("Hello!")

        assert TOKEN not in str(info.value)
        assert info.value.server_message == "Bad token ***"

    @pytest.mark.parametrize(
        "response",
        [httpx2.Response(200, text="<html>hello</html>"), httpx2.Response(200, json={"c": 1})],
    )
    async def test_unexpected_2xx_not_retried(self, client: AsyncQuickchat, chat, response):
        """A 2xx that is not the documented JSON is not resent: the server probably has it."""
        chat.script(response)

        with pytest.raises(UnexpectedResponseError) as info:
            await client.say("Hello!")

        assert info.value.outcome_unknown
        assert len(chat.requests) == 1

    async def test_response_too_large(self, make_client: MakeClient, chat: FakeChat):
        """A body over max_response_bytes is refused, not read into memory."""
        chat.script(chat_reply("x" * 5000))
        client = make_client(max_response_bytes=1024)

        with pytest.raises(ResponseTooLargeError, match="max_response_bytes=1024"):
            await client.say("Hello!")

    async def test_large_error_body_quoted_briefly(self, make_client: MakeClient, chat):
        """A huge error body is read up to the cap and quoted in a few hundred characters."""
        chat.script(error_response(400, "bad " * 100_000))
        client = make_client(max_response_bytes=2048)

        with pytest.raises(BadRequestError) as info:
            await client.say("Hello!")

        assert len(info.value.server_message) <= 300
        assert len(info.value.response.content) == 2048
        assert info.value.response.truncated

    async def test_redirect_not_followed(self, client: AsyncQuickchat, chat: FakeChat):
        """A 3xx is an error, never followed: the credential stays at its origin."""
        chat.script(httpx2.Response(307, headers={"Location": "https://evil.example/chat"}))

        with pytest.raises(APIStatusError, match="does not follow redirects"):
            await client.say("Hello!")

        assert len(chat.requests) == 1


class TestRetries:
    async def test_unsent_failures_retried(self, client: AsyncQuickchat, chat: FakeChat):
        """A connection that never opened cannot have been processed: retried, then delivered."""
        chat.script(httpx2.ConnectError("refused"), httpx2.ConnectTimeout("slow"))

        reply = await client.say("Hello!")

        assert reply.text == "You said: Hello!"
        assert reply.attempts == 3
        assert len(chat.requests) == 3

    async def test_retries_are_bounded(self, client: AsyncQuickchat, chat: FakeChat):
        """After max_retries the connection error surfaces, saying nothing was sent."""
        chat.script(*[httpx2.ConnectError("refused")] * 3)

        with pytest.raises(APIConnectionError, match="not sent") as info:
            await client.say("Hello!")

        assert not info.value.outcome_unknown
        assert len(chat.requests) == 3

    async def test_no_retries(self, make_client: MakeClient, chat: FakeChat):
        """max_retries=0 sends once."""
        chat.script(httpx2.ConnectError("refused"))

        with pytest.raises(APIConnectionError, match="not sent"):
            await make_client(max_retries=0).say("Hello!")

        assert len(chat.requests) == 1

    @pytest.mark.parametrize(
        "error",
        [
            httpx2.ReadTimeout("slow"),
            httpx2.RemoteProtocolError("Server disconnected without sending a response."),
            httpx2.ReadError("reset"),
            httpx2.WriteError("broken pipe"),
        ],
    )
    async def test_ambiguous_failures_not_retried(self, client: AsyncQuickchat, chat, error):
        """Failures after sending may have been recorded: no retry, outcome_unknown set."""
        chat.script(Landed(error))

        with pytest.raises(APIConnectionError, match="may or may not have recorded") as info:
            await client.say("Hello!")

        assert info.value.outcome_unknown
        assert len(chat.requests) == 1

    async def test_500_not_retried(self, client: AsyncQuickchat, chat: FakeChat):
        """A 500 may come after the message was recorded: not retried by default."""
        chat.script(Landed(error_response(500, "oops")))

        with pytest.raises(InternalServerError):
            await client.say("Hello!")

        assert len(chat.requests) == 1

    async def test_retry_ambiguous(self, make_client: MakeClient, chat: FakeChat):
        """With retry_ambiguous=True, read timeouts and 5xx are retried too."""
        chat.script(httpx2.ReadTimeout("slow"), error_response(502, "bad"))

        reply = await make_client(retry_ambiguous=True).say("Hello!")

        assert reply.attempts == 3
        assert len(chat.requests) == 3

    @pytest.mark.parametrize("status", [429, 503])
    async def test_rate_limit_and_unavailable_retried(self, client, chat: FakeChat, status):
        """429 and 503 are retried (the server did not process the message)."""
        chat.script(error_response(status, headers={"Retry-After": "1"}))

        await client.say("Hello!")

        assert len(chat.requests) == 2

    @pytest.mark.parametrize(
        ("status", "error"), [(429, RateLimitError), (503, ServiceUnavailableError)]
    )
    async def test_retry_after_over_the_cap(self, client, chat: FakeChat, status, error):
        """A Retry-After beyond 60 s is not slept through: the error carries it, at once."""
        chat.script(error_response(status, headers={"Retry-After": "61"}))

        with pytest.raises(error) as info:
            await client.say("Hello!")

        assert info.value.retry_after == 61
        assert "61 s" in str(info.value)
        assert len(chat.requests) == 1

    async def test_rate_limit_exhausted(self, client: AsyncQuickchat, chat: FakeChat):
        """When every attempt is rate-limited, the last RateLimitError says how many tried."""
        chat.script(*[error_response(429, headers={"Retry-After": "2"})] * 3)

        with pytest.raises(RateLimitError, match="after 3 attempts") as info:
            await client.say("Hello!")

        assert info.value.retry_after == 2

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
    async def test_client_errors_never_retried(self, client, chat: FakeChat, status):
        """Other 4xx are final."""
        chat.script(error_response(status, "no"))

        with pytest.raises(APIStatusError):
            await client.say("Hello!")

        assert len(chat.requests) == 1

    async def test_waits_what_retry_after_asks(self, client: AsyncQuickchat, chat: FakeChat):
        """The wait between attempts is the server's Retry-After (stamina's test mode off)."""
        chat.script(error_response(429, headers={"Retry-After": "0.2"}))
        waits: list[float] = []
        hooks = stamina.instrumentation.get_on_retry_hooks()
        stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
        try:
            with stamina.set_testing(False):
                started = anyio.current_time()
                await client.say("Hello!")
                elapsed = anyio.current_time() - started
        finally:
            stamina.instrumentation.set_on_retry_hooks(hooks)

        assert waits == [0.2]
        assert elapsed >= 0.2

    async def test_retries_logged_at_info_without_secrets(self, client, chat: FakeChat, caplog):
        """Each retry is logged at INFO on quickchat_async, with no credential or text."""
        chat.script(httpx2.ConnectError("refused"))

        with caplog.at_level(logging.DEBUG, logger="quickchat_async"):
            await client.say("my secret question")

        ours = [r for r in caplog.records if r.name == "quickchat_async"]
        infos = [r for r in ours if r.levelno == logging.INFO]
        (info,) = infos
        assert info.getMessage() == (
            "Retrying the Chat request to https://app.quickchat.ai/chat (attempt 2 of 3) "
            "after APIConnectionError"
        )
        for record in caplog.records:
            assert TOKEN not in record.getMessage()
            if record.levelno > logging.DEBUG:
                assert "my secret question" not in record.getMessage()

    async def test_every_attempt_waits_on_the_rate_limiter(self, make_client, chat: FakeChat):
        """A client's rate limiter is asked for every attempt, retries included."""

        class Counting(RateLimiter):
            __slots__ = ("count",)

            async def acquire(self) -> None:
                self.count += 1
                await super().acquire()

        limiter = Counting(per_second=10_000)
        limiter.count = 0
        chat.script(error_response(429, headers={"Retry-After": "0"}))

        await make_client(rate_limiter=limiter).say("Hello!")

        assert limiter.count == 2


class TestConnectionSlots:
    async def test_waiters_served_in_call_order(self):
        """Turns waiting for a connection slot get it in the order they asked."""
        transport = Held()
        client = held_client(transport, max_connections=1)

        async with client, anyio.create_task_group() as tg:
            for text in ["first", "second", "third", "fourth"]:
                tg.start_soon(client.say, text)
                await anyio.wait_all_tasks_blocked()
            transport.release.set()

        assert transport.texts == ["first", "second", "third", "fourth"]

    async def test_never_more_in_flight_than_slots(self):
        """With every slot busy, further turns wait outside the transport."""
        transport = Held(hold=100)
        client = held_client(transport, max_connections=2)

        async with client, anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(client.say, f"turn {n}")
            await anyio.wait_all_tasks_blocked()
            assert len(transport.requests) == 2
            transport.release.set()

        assert len(transport.requests) == 5

    async def test_waiting_past_the_deadline(self):
        """With every slot busy, a turn waits for one; past its deadline it fails, unsent."""
        transport = Held()
        client = held_client(transport, max_connections=1, timeout=0.3, max_retries=0)

        async with client, anyio.create_task_group() as tg:
            tg.start_soon(client.say, "first")
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(APITimeoutError, match="connection slots") as info:
                await client.say("second")
            transport.release.set()

        assert not info.value.outcome_unknown
        assert transport.texts == ["first"]

    async def test_the_wait_counts_against_the_deadline(self):
        """A turn that waited for a slot gets only what is left of its deadline."""
        transport = Held()
        client = held_client(transport, max_connections=1, timeout=5)

        async with client, anyio.create_task_group() as tg:
            tg.start_soon(client.say, "first")
            tg.start_soon(client.say, "second")
            await anyio.sleep(0.3)
            transport.release.set()

        first, second = (request.timeout for request in transport.requests)
        assert first == Timeout(total=5, connect=5)
        assert second.total is not None
        assert second.total < 4.9
        assert second.connect == 5

    async def test_no_deadline_waits_as_long_as_it_takes(self):
        """With timeout=None, a waiting turn waits for its slot without limit."""
        transport = Held()
        client = held_client(transport, max_connections=1, timeout=None)

        async with client, anyio.create_task_group() as tg:
            tg.start_soon(client.say, "first")
            tg.start_soon(client.say, "second")
            await anyio.sleep(0.1)
            transport.release.set()

        assert [request.timeout.total for request in transport.requests] == [None, None]

    async def test_a_slot_handed_to_a_cancelled_waiter_is_not_lost(self):
        """A waiter cancelled just as the slot frees passes it on; the client keeps both slots.

        The slot's holder finishes and the first waiter is cancelled in the same instant, before
        either runs again; the next waiter gets the slot, and later turns still go through.
        """
        transport = Held()
        client = held_client(transport, max_connections=1)
        scope = anyio.CancelScope()

        async def cancelled() -> None:
            with scope:
                await client.say("cancelled")

        async with client:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.say, "holder")
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(cancelled)
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(client.say, "next")
                    await anyio.wait_all_tasks_blocked()
                    transport.release.set()  # the holder's slot goes to the first waiter...
                    scope.cancel()  # ...cancelled before it could run
                await client.say("after")

        assert transport.texts[0] == "holder"
        assert transport.texts[-2:] == ["next", "after"]
        assert scope.cancelled_caught or "cancelled" in transport.texts
