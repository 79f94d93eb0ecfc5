"""The blocking client's per-call options: timeout, max_retries, deadline, extra headers, body."""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from quickchat_async import APITimeoutError, Quickchat, RateLimitError, ValidationError
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from .conftest import TOKEN


class TestPerCallOptions:
    def test_timeout_of_one_turn(self, emulator: Emulator):
        """say(timeout=...) bounds that turn's attempts only."""
        emulator.faults.script([Fault("slow_headers", delay=2.0)])
        with emulator.sync_client(max_retries=0) as client:
            start = time.monotonic()
            with pytest.raises(APITimeoutError):
                client.say("Hello", timeout=0.3)
            assert time.monotonic() - start < 1.5
            assert client.timeout.total == 30
            assert client.say("Hello again").text

    def test_max_retries_of_one_turn(self, emulator: Emulator):
        """say(max_retries=0) raises the first failure that the client would have retried."""
        emulator.faults.script([Fault("rate_limit", retry_after="0")] * 2)
        with emulator.sync_client() as client, pytest.raises(RateLimitError):
            client.say("Hello", max_retries=0)
        assert emulator.stats().requests == 1

    def test_deadline_bounds_the_whole_turn(self, emulator: Emulator):
        """A deadline covers every attempt: the second is cut short, then the turn ends."""
        emulator.faults.script([Fault("slow_headers", delay=2.0)] * 3)
        with emulator.sync_client(retry_ambiguous=True) as client:
            conv = client.conversation()
            start = time.monotonic()
            with pytest.raises(APITimeoutError, match=r"deadline of 0\.5 s") as info:
                conv.say("Hello", timeout=0.3, deadline=0.5)
            elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 1.5
        assert info.value.outcome_unknown
        assert emulator.stats().requests == 2

    def test_client_deadline_and_with_options(self, emulator: Emulator):
        """deadline= on the client, and with_options(deadline=...), apply to every turn."""
        with emulator.sync_client(deadline=30) as client:
            assert client.deadline == 30
            assert client.with_options(deadline=None).deadline is None
            assert client.say("Hello").text

    def test_extra_headers_and_body_reach_the_server(self):
        """extra_headers and extra_body are added to that request only."""
        seen: list[httpx2.Request] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return httpx2.Response(200, json={"reply": "Hi", "conv_id": "c-1", "ord_number": 3})

        with (
            httpx2.Client(transport=httpx2.MockTransport(handler)) as http,
            Quickchat(token=TOKEN, scenario_id="s", http_client=http) as client,
        ):
            conv = client.conversation()
            conv.say("One", extra_headers={"X-Trace": "t-1"}, extra_body={"channel": "web"})
            conv.say("Two")
        first, second = (json.loads(request.content) for request in seen)
        assert first["channel"] == "web"
        assert "channel" not in second
        assert seen[0].headers["x-trace"] == "t-1"
        assert "x-trace" not in seen[1].headers

    def test_bad_options(self, emulator: Emulator):
        """An unknown option is a TypeError; a bad value or a documented field a ValidationError."""
        with emulator.sync_client() as client:
            conv = client.conversation()
            with pytest.raises(TypeError, match="retries"):
                conv.say("Hello", retries=3)  # type: ignore[call-arg]
            with pytest.raises(ValidationError, match="extra_body may not set text"):
                conv.say("Hello", extra_body={"text": "other"})
            with pytest.raises(ValidationError, match="credential"):
                client.say("Hello", extra_headers={"X-Leak": TOKEN})
        assert emulator.stats().requests == 0
