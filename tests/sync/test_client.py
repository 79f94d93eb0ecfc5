"""Quickchat: the blocking client's arguments, environment, flavors, lifecycle and `say()`."""

from __future__ import annotations

import threading

import httpx
import httpx2
import pytest

from quickchat_async import (
    ClientClosedError,
    Flavor,
    GeventTransport,
    Quickchat,
    Reply,
    SyncHttpx2Transport,
    SyncHttpxTransport,
    SyncTransport,
    Timeout,
    ValidationError,
)
from quickchat_async.emulator import Fault
from quickchat_async.emulator import Flavor as RecordedFlavor
from quickchat_async.testing import Emulator

from .conftest import API_KEY, SCENARIO, TOKEN


def reply_json(conv_id: str = "c-1", ord_number: int = 3) -> dict[str, object]:
    return {"reply": "Hi!", "conv_id": conv_id, "ord_number": ord_number}


class TestConfiguration:
    def test_same_arguments_as_the_async_client(self):
        """Flavor, URL, scenario, timeout and retries come out as AsyncQuickchat's do."""
        with Quickchat(
            api_key=API_KEY, scenario_id="s", timeout=3, max_retries=5, max_connections=7
        ) as client:
            assert client.flavor is Flavor.LEGACY
            assert client.base_url == "https://chat.quickchat.ai"
            assert client.config.url == "https://chat.quickchat.ai/chat"
            assert client.scenario_id == "s"
            assert client.timeout == Timeout(total=3, connect=3)
            assert client.max_retries == 5
            assert client.config.max_connections == 7

    def test_environment_variables(self, monkeypatch):
        """Unset arguments fall back to the QUICKCHAT_* variables."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)
        monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "from-env")
        monkeypatch.setenv("QUICKCHAT_BASE_URL", "http://127.0.0.1:1")
        with Quickchat() as client:
            assert client.flavor is Flavor.CURRENT
            assert client.scenario_id == "from-env"
            assert client.base_url == "http://127.0.0.1:1"

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({}, "No credential"),
            ({"token": TOKEN, "api_key": API_KEY}, "not both"),
            ({"token": TOKEN, "scenario_id": "s", "base_url": "http://example.com"}, "clear text"),
            ({"token": TOKEN, "scenario_id": "s", "max_retries": -1}, "max_retries"),
        ],
    )
    def test_bad_arguments(self, options, match):
        """The same checks as the async client, with the same ValidationError."""
        with pytest.raises(ValidationError, match=match):
            Quickchat(**options)

    def test_default_transport_is_httpx2(self):
        """Without a choice, requests go through an owned httpx2.Client named in the User-Agent."""
        with Quickchat(token=TOKEN, scenario_id="s") as client:
            assert isinstance(client.transport, SyncHttpx2Transport)
            assert isinstance(client.transport.client, httpx2.Client)
            assert "httpx2/" in client.config.headers["User-Agent"]

    @pytest.mark.parametrize(
        ("http_client", "transport_type"),
        [(httpx2.Client, SyncHttpx2Transport), (httpx.Client, SyncHttpxTransport)],
    )
    def test_callers_client_is_used_and_left_open(self, http_client, transport_type):
        """An httpx2.Client or an httpx.Client passed in is used, and never closed by the SDK."""
        http = http_client()
        with Quickchat(token=TOKEN, scenario_id="s", http_client=http) as client:
            assert isinstance(client.transport, transport_type)
            assert client.transport.client is http
        assert not http.is_closed
        http.close()

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"transport": "aiohttp"}, "Unknown transport 'aiohttp'"),
            ({"http_client": httpx2.AsyncClient()}, "httpx2.Client"),
            ({"http_client": httpx2.Client(), "transport": "httpx2"}, "not both"),
            ({"transport": object()}, "send\\(request\\) and close\\(\\)"),
        ],
    )
    def test_transports_of_the_async_client_are_refused(self, options, match):
        """Only blocking engines and clients are accepted; the message says which."""
        with pytest.raises(ValidationError, match=match):
            Quickchat(token=TOKEN, scenario_id="s", **options)

    def test_gevent_transport_needs_monkey_patching(self):
        """transport="gevent" outside gevent's monkey-patching is refused, and says why."""
        with pytest.raises(RuntimeError, match="monkey-patching"):
            Quickchat(token=TOKEN, scenario_id="s", transport="gevent")
        with pytest.raises(RuntimeError, match="monkey-patching"):
            GeventTransport()

    def test_a_transport_of_ones_own(self):
        """Any object with send(request) and close() can stand in, and is closed with the client."""

        class Fake:
            def __init__(self) -> None:
                self.closed = False
                self.bodies: list[bytes] = []

            def send(self, request):
                self.bodies.append(request.body)
                from quickchat_async import HTTPResponse  # noqa: PLC0415

                return HTTPResponse(
                    200, {}, b'{"reply": "fake", "conv_id": "c-9", "ord_number": 3}'
                )

            def close(self) -> None:
                self.closed = True

        fake = Fake()
        assert isinstance(fake, SyncTransport)
        with Quickchat(token=TOKEN, scenario_id="s", transport=fake) as client:
            assert client.say("Hello").text == "fake"
        assert fake.closed
        assert b'"text":"Hello"' in fake.bodies[0]


class TestFlavors:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    def test_each_flavor_reaches_the_endpoint(self, emulator: Emulator, flavor):
        """The token goes as Bearer, the api_key in the body; the emulator records which."""
        with emulator.sync_client(flavor=flavor) as client:
            reply = client.say("Hello")
            follow_up = client.say("Again", conv_id=reply.conv_id)
        assert follow_up.conv_id == reply.conv_id
        message = emulator.messages(reply.conv_id)[1]
        assert message.flavor is RecordedFlavor(flavor)
        assert emulator.user_messages(reply.conv_id) == ("Hello", "Again")

    def test_say_sends_metadata_and_context(self, emulator: Emulator):
        """The bare say() sends client_metadata (kb_topic included) and message_context."""
        with emulator.sync_client() as client:
            reply = client.say(
                "Refunds?",
                client_metadata={"kb_topic": "billing", "userId": 7},
                message_context="On the checkout page.",
            )
        sent = emulator.messages(reply.conv_id)[1]
        assert sent.client_metadata == {"kb_topic": "billing", "userId": 7}
        assert sent.message_context == "On the checkout page."

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"text": ""}, "text must not be empty"),
            ({"text": "x", "conv_id": ""}, "conv_id"),
            ({"text": "x", "message_context": "c" * 1001}, "message_context"),
            ({"text": "x", "client_metadata": {str(n): n for n in range(6)}}, "at most 5"),
        ],
    )
    def test_bad_input_is_refused_before_sending(self, emulator: Emulator, kwargs, match):
        """Input errors are ValidationErrors, and nothing reaches the server."""
        with emulator.sync_client() as client, pytest.raises(ValidationError, match=match):
            client.say(**kwargs)
        assert emulator.stats().requests == 0


class TestLifecycle:
    def test_closed_client_refuses_to_send(self, emulator: Emulator):
        """After close() or the with block, say() raises ClientClosedError; close twice is fine."""
        client = emulator.sync_client()
        with client:
            client.say("Hello")
        assert client.is_closed
        client.close()
        with pytest.raises(ClientClosedError, match="closed"):
            client.say("Hello again")
        with pytest.raises(ClientClosedError), client:
            pass

    def test_with_options_shares_the_connections(self, emulator: Emulator):
        """A derived client has its own settings, shares the transport, and leaves it open."""
        with emulator.sync_client() as client:
            quick = client.with_options(timeout=2, max_retries=0)
            assert quick.transport is client.transport
            assert quick.timeout.total == 2
            assert quick.max_retries == 0
            assert client.max_retries == 2
            quick.close()
            assert client.say("still open").text
        assert quick.is_closed

    def test_repr_says_where_and_what_state(self, emulator: Emulator):
        """The repr names the flavor, the URL, the scenario and the state."""
        client = emulator.sync_client()
        assert repr(client) == (
            f"<Quickchat flavor='current' url='{emulator.base_url}/chat' "
            f"scenario_id='{SCENARIO.scenario_id}' state='unopened'>"
        )
        client.close()
        assert "state='closed'" in repr(client)


class Recorder:
    """A telemetry that records what the sender tells it, as the OpenTelemetry one would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def turn(self, config, request, conv_id):
        recorder = self

        class Trace:
            def __enter__(self):
                recorder.events.append(("turn", request.text))
                return self

            def __exit__(self, exc_type, exc, tb):
                recorder.events.append(("end", type(exc).__name__ if exc else None))

            def attempt(self, num):
                recorder.events.append(("attempt", num))

            def attempt_failed(self, num, error):
                recorder.events.append(("failed", type(error).__name__))

            def replied(self, reply):
                recorder.events.append(("replied", reply.attempts))

        return Trace()


class TestTelemetry:
    def test_turns_are_reported(self, emulator: Emulator):
        """telemetry= gets each turn, its attempts, its failures and its reply."""
        recorder = Recorder()
        emulator.faults.script([Fault("rate_limit", retry_after="0")])
        with emulator.sync_client(telemetry=recorder) as client:
            client.conversation().say("Hello")
        assert recorder.events == [
            ("turn", "Hello"),
            ("attempt", 1),
            ("failed", "RateLimitError"),
            ("attempt", 2),
            ("replied", 2),
            ("end", None),
        ]


class TestReplies:
    def test_reply_counts_attempts_and_time(self, emulator: Emulator):
        """A reply says how many attempts it took and how long the turn lasted."""
        emulator.faults.script(["rate_limit"])
        with emulator.sync_client() as client:
            reply = client.say("Hello")
        assert isinstance(reply, Reply)
        assert reply.attempts == 2
        assert reply.elapsed > 0

    def test_threads_share_one_client(self, emulator: Emulator):
        """Many threads may use one client; each request waits for one of its connection slots."""
        replies: list[Reply] = []
        with emulator.sync_client(max_connections=2) as client:

            def talk(n: int) -> None:
                replies.append(client.say(f"thread {n}"))

            threads = [threading.Thread(target=talk, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        assert len(replies) == 8
        assert len({reply.conv_id for reply in replies}) == 8
