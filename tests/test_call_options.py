"""Per-call options of say() (client, Conversation, StoredConversation), and with_options()."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest

from quickchat_async import (
    AsyncQuickchat,
    ClientClosedError,
    MemoryStore,
    RateLimiter,
    Reply,
    ServiceUnavailableError,
    Timeout,
    ValidationError,
)

from ._wire import API_KEY, SCENARIO_ID, TOKEN, Wire


pytestmark = pytest.mark.anyio

Say = Callable[..., Awaitable[Reply]]


@pytest.fixture(name="wire")
def _wire() -> Wire:
    return Wire()


@pytest.fixture(name="client")
async def _client(wire: Wire) -> AsyncIterator[AsyncQuickchat]:
    async with (
        wire.http_client() as http,
        AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http) as client,
    ):
        yield client


@pytest.fixture(name="say", params=["client", "conversation", "stored"])
async def _say(request: pytest.FixtureRequest, client: AsyncQuickchat) -> Say:
    """`say()` of each surface that takes per-call options."""
    if request.param == "client":
        return client.say
    if request.param == "conversation":
        return client.conversation().say
    stored = await client.conversation_for("user-1", store=MemoryStore())
    return stored.say


def unavailable(retry_after: str = "0") -> httpx2.Response:
    return httpx2.Response(503, text="busy", headers={"Retry-After": retry_after})


class TestPerCallOptionsOnTheWire:
    async def test_extra_headers_go_on_this_request_only(self, wire: Wire, say: Say):
        """extra_headers are sent with that turn, beside the SDK's own, and not with the next."""
        await say("Hello", extra_headers={"X-Request-Id": "r-1"})
        await say("Again")
        first, second = wire.sent
        assert first.request.headers["X-Request-Id"] == "r-1"
        assert first.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "X-Request-Id" not in second.request.headers

    async def test_extra_body_fields_follow_the_documented_ones(self, wire: Wire, say: Say):
        """extra_body fields are added to that turn's body after the documented fields."""
        await say("Hello", extra_body={"channel": "web", "flags": [1, 2]})
        await say("Again")
        first, second = wire.sent
        assert first.body["text"] == "Hello"
        assert first.body["scenario_id"] == SCENARIO_ID
        assert first.body["channel"] == "web"
        assert first.body["flags"] == [1, 2]
        assert list(first.body)[-2:] == ["channel", "flags"]
        assert "channel" not in second.body

    async def test_timeout_bounds_each_attempt_of_that_turn(self, wire: Wire, say: Say):
        """timeout= sets the per-attempt limits of that turn on the wire, and of no other."""
        await say("Hello", timeout=Timeout(total=7, connect=2))
        await say("Seconds", timeout=3)
        await say("Default")
        custom, seconds, default = (sent.timeout for sent in wire.sent)
        assert custom["read"] == 7
        assert custom["connect"] == 2
        assert seconds["read"] == 3
        assert seconds["connect"] == 3
        assert default["read"] == 30
        assert default["connect"] == 5

    async def test_max_retries_sets_that_turns_attempts(self, wire: Wire, say: Say):
        """max_retries= replaces the client's count for that turn: 0 fails at the first 503."""
        wire.script(unavailable())
        with pytest.raises(ServiceUnavailableError):
            await say("Hello", max_retries=0)
        assert len(wire.sent) == 1

        wire.script(*[unavailable()] * 4)
        reply = await say("Hello", max_retries=4)
        assert reply.attempts == 5
        assert len(wire.sent) == 6


class TestReply:
    async def test_attempts_and_elapsed(self, wire: Wire, client: AsyncQuickchat):
        """Reply.attempts counts the turn's attempts; Reply.elapsed its seconds, waits included."""
        first = await client.say("Hello")
        wire.script(unavailable(), unavailable())
        retried = await client.say("Hello")
        assert first.attempts == 1
        assert retried.attempts == 3
        assert 0 <= first.elapsed < 5
        assert 0 <= retried.elapsed < 5


class TestBadOptions:
    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"timeout": -1}, "timeout"),
            ({"timeout": "soon"}, "timeout"),
            ({"max_retries": -1}, "max_retries"),
            ({"max_retries": 1.5}, "max_retries"),
            ({"deadline": 0}, "deadline"),
            ({"deadline": float("nan")}, "deadline"),
            ({"extra_headers": "X-A: 1"}, "extra_headers"),
            ({"extra_headers": {"Authorization": "Bearer other"}}, "extra_headers"),
            ({"extra_headers": {"X-A": "1\r\nX-B: 2"}}, "extra_headers"),
            ({"extra_headers": {"X-Leak": f"t {TOKEN}"}}, "extra_headers"),
            ({"extra_body": ["channel"]}, "extra_body"),
            ({"extra_body": {"text": "other"}}, "extra_body"),
            ({"extra_body": {"conv_id": "c-2"}}, "extra_body"),
            ({"extra_body": {"api_key": "k"}}, "extra_body"),
            ({"extra_body": {"echo": TOKEN}}, "extra_body"),
            ({"extra_body": {"when": object()}}, "extra_body"),
        ],
    )
    async def test_a_bad_value_is_refused_and_named(self, wire: Wire, say: Say, options, named):
        """A bad per-call option is a ValidationError naming it; nothing is sent."""
        with pytest.raises(ValidationError, match=named) as info:
            await say("Hello", **options)
        assert TOKEN not in str(info.value)
        assert wire.sent == []

    async def test_an_unknown_option_is_a_type_error(self, say: Say):
        """A misspelt option fails as a wrong keyword argument does, listing the real ones."""
        with pytest.raises(TypeError, match=r"max_retry.*per-call options"):
            await say("Hello", max_retry=1)

    async def test_the_legacy_credential_is_refused_in_extra_body(self, wire: Wire):
        """On the legacy flavor, extra_body carrying the api_key is refused."""
        async with (
            wire.http_client() as http,
            AsyncQuickchat(api_key=API_KEY, scenario_id=SCENARIO_ID, http_client=http) as legacy,
        ):
            with pytest.raises(ValidationError, match="extra_body") as info:
                await legacy.say("Hello", extra_body={"note": API_KEY})
        assert API_KEY not in str(info.value)

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"timeout": 0}, "timeout"),
            ({"max_retries": -2}, "max_retries"),
            ({"deadline": -1}, "deadline"),
            ({"default_headers": {"Authorization": "Bearer x"}}, "default_headers"),
            ({"default_headers": {"X-Leak": TOKEN}}, "default_headers"),
            ({"rate_limiter": 5}, "rate_limiter"),
            ({"rate_limiter": object()}, "rate_limiter"),
        ],
    )
    async def test_with_options_names_a_bad_value(self, client: AsyncQuickchat, options, named):
        """with_options() refuses a bad value with a ValidationError that names it."""
        with pytest.raises(ValidationError, match=named):
            client.with_options(**options)

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"deadline": 0}, "deadline"),
            ({"rate_limiter": "10/s"}, "rate_limiter"),
            ({"telemetry": "otel"}, "telemetry"),
        ],
    )
    def test_the_client_names_a_bad_value(self, options: dict[str, Any], named: str):
        """The client's new options are checked when it is made, and named."""
        with pytest.raises(ValidationError, match=named):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, **options)

    async def test_a_limiter_whose_acquire_is_not_async_is_refused(self):
        """A limiter must have an `async def acquire()`: a plain one would not wait."""

        class Blocking:
            def acquire(self) -> None:
                pass

        with pytest.raises(ValidationError, match="rate_limiter"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, rate_limiter=Blocking())  # type: ignore[arg-type]


class TestWithOptions:
    async def test_settings_apply_on_the_wire(self, wire: Wire, client: AsyncQuickchat):
        """The derived client sends with its own timeout and headers merged over the client's."""
        quick = client.with_options(timeout=4, default_headers={"X-Team": "support"})
        await quick.say("Hello")
        await client.say("Hello")
        derived, original = wire.sent
        assert derived.timeout["read"] == 4
        assert derived.request.headers["X-Team"] == "support"
        assert derived.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert original.timeout["read"] == 30
        assert "X-Team" not in original.request.headers

    async def test_retries_and_deadline_are_its_own(self, wire: Wire, client: AsyncQuickchat):
        """max_retries and deadline of the derived client leave the original's as they were."""
        patient = client.with_options(max_retries=5, deadline=60)
        assert (patient.max_retries, patient.config.deadline) == (5, 60)
        assert (client.max_retries, client.config.deadline) == (2, None)
        wire.script(*[unavailable()] * 5)
        assert (await patient.say("Hello")).attempts == 6

    async def test_it_shares_the_connections(self, client: AsyncQuickchat):
        """The derived client sends through the same transport, the same pool."""
        derived = client.with_options(max_retries=0)
        assert derived.transport is client.transport

    async def test_closing_it_leaves_the_pool_to_its_owner(
        self, wire: Wire, client: AsyncQuickchat
    ):
        """Closing a derived client closes it alone; the owner and its pool go on."""
        async with client.with_options(max_retries=0) as derived:
            await derived.say("Hello")
        assert derived.is_closed
        assert not client.is_closed
        await client.say("Still here")
        assert len(wire.sent) == 2
        with pytest.raises(ClientClosedError):
            await derived.say("Closed")

    async def test_closing_the_owner_closes_the_derived(self, wire: Wire):
        """Closing the client that owns the pool closes it for the clients derived from it."""
        async with wire.http_client() as http:
            owner = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http)
            derived = owner.with_options(timeout=5)
            await owner.aclose()
            assert derived.is_closed
            with pytest.raises(ClientClosedError):
                await derived.say("Hello")
        assert wire.sent == []

    async def test_the_limiter_is_kept_replaced_or_dropped(self, client: AsyncQuickchat):
        """rate_limiter= replaces the client's limiter; None drops it; not given keeps it."""
        limiter, other = RateLimiter(per_second=5), RateLimiter(per_second=1)
        limited = client.with_options(rate_limiter=limiter)
        assert limited.rate_limiter is limiter
        assert limited.with_options(max_retries=1).rate_limiter is limiter
        assert limited.with_options(rate_limiter=other).rate_limiter is other
        assert limited.with_options(rate_limiter=None).rate_limiter is None
