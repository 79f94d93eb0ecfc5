"""The secrets canary: the token and api_key never show, wherever a user or a tool looks.

Every test of this suite runs with DEBUG logging on every logger, and its records are checked
(conftest `_secrets_canary`). Here: the reprs of everything the SDK hands out, tracebacks
formatted with locals (by the standard library and by rich), snapshots, and the base URLs that
would send a credential in clear text or carry one themselves.
"""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickchat_async import AsyncQuickchat, QuickchatError, ValidationError
from quickchat_async._wire import encode_turn
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import FAULT_FAMILIES, every_view, rich_rendering, with_locals

from .rule import API_KEY, SECRETS, TALLY, TOKEN, assert_no_secret, check_log_records
from .strategies import bounded


pytestmark = pytest.mark.anyio

rich_pretty = pytest.importorskip("rich.pretty")


class TestWhatTheSDKHandsOut:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_reprs_snapshots_and_requests(self, emulator: Emulator, flavor):
        """Client, conversation, turns, snapshot, prepared request: no credential in any view."""
        async with emulator.client(flavor=flavor) as client:
            conv = client.conversation(kb_topic="billing")
            await conv.say("Hello")
            emulator.faults.script([Fault("drop_after")])
            with pytest.raises(QuickchatError):
                await conv.say("Are you there?")
            request = encode_turn(
                client.config, client.config.default_call, text="Hi", conv_id=conv.conv_id
            )
            views = [
                client,
                client.config,
                conv,
                conv.history,
                conv.unconfirmed,
                request,
                client.transport,
            ]
            for value in views:
                assert_no_secret(every_view(value), f"a view of {type(value).__name__}")
            assert_no_secret(json.dumps(conv.snapshot()), "a snapshot")
            resumed = client.resume(conv.snapshot())
            assert_no_secret(every_view(resumed), "a resumed conversation")
            # The prepared request does carry it, where it must go, and only there.
            assert (TOKEN in str(request.headers)) is (flavor == "current")
            assert (API_KEY.encode() in request.body) is (flavor == "legacy")

    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_exceptions_and_tracebacks_with_locals(self, emulator: Emulator, flavor):
        """Each family of failure: message, repr, and tracebacks with every frame's locals."""
        async with emulator.client(flavor=flavor, max_response_bytes=16 * 1024) as client:
            conv = client.conversation()
            await conv.say("Hello")
            for fault in FAULT_FAMILIES:
                emulator.faults.script([fault])
                with pytest.raises(QuickchatError) as info:
                    await conv.say(f"through {fault.kind.value}")
                exc = info.value
                standard = with_locals(exc)
                for text in (str(exc), repr(exc), standard, rich_rendering(exc)):
                    assert_no_secret(text, f"the {fault.kind.value} error")
                TALLY["errors checked"] += 1

    async def test_a_failed_constructor_shows_no_credential(self):
        """A client that refuses its arguments shows no credential in its traceback's locals."""
        with pytest.raises(ValidationError) as info:
            AsyncQuickchat(token=TOKEN, scenario_id="s", base_url="http://example.com")
        standard = with_locals(info.value)
        # The test's own frame passed the token in; the SDK's frames must not hold it.
        sdk_part = standard[standard.index("quickchat_async") :]
        assert_no_secret(sdk_part, "the constructor's traceback")
        assert_no_secret(rich_pretty.pretty_repr(info.value), "the constructor's error")


class TestTheCanaryItself:
    def test_a_leaking_record_is_caught(self):
        """The log check fails on a record that carries a credential, in its args or extras."""
        leaks = [
            logging.LogRecord("x", logging.DEBUG, "f", 1, "sent %s", (TOKEN,), None),
            logging.LogRecord("x", logging.DEBUG, "f", 1, "sent", (), None),
        ]
        leaks[1].api_key = API_KEY
        for record in leaks:
            with pytest.raises(AssertionError, match="credential leaked"):
                check_log_records([record])
        check_log_records([logging.LogRecord("x", logging.DEBUG, "f", 1, "fine", (), None)])


class TestBaseURL:
    @pytest.mark.parametrize(
        "url",
        [
            "http://app.quickchat.ai",
            "http://10.0.0.1:8000",
            "http://0.0.0.0:8000",
            "http://[::2]",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
        ],
    )
    @pytest.mark.parametrize("flavor", ["token", "api_key"])
    def test_plain_http_off_loopback_is_refused(self, url, flavor):
        """Plain http:// would send the credential in clear text: refused, except to loopback."""
        with pytest.raises(ValidationError, match="clear text") as info:
            AsyncQuickchat(scenario_id="s", base_url=url, **{flavor: SECRETS[flavor == "api_key"]})
        assert_no_secret(str(info.value), "the error")

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:9", "http://127.8.9.10", "http://localhost:1", "http://[::1]:2"]
    )
    async def test_plain_http_to_loopback_is_allowed(self, url):
        """The emulator and local proxies live on loopback."""
        async with AsyncQuickchat(token=TOKEN, scenario_id="s", base_url=url) as client:
            assert client.base_url == url

    @bounded(100)
    @given(
        st.sampled_from(["http", "https"]),
        st.text(st.characters(codec="ascii", exclude_characters="/?#@[]\r\n\t "), min_size=1),
        st.sampled_from(["", ":", ":pw-9f2", f":{TOKEN}"]),
        st.sampled_from(["127.0.0.1", "app.quickchat.ai", "localhost:8000"]),
    )
    def test_credentials_in_the_url_are_refused(self, scheme, user, password, host):
        """user:password@host is refused, whatever the user, password, scheme or host."""
        TALLY["bad inputs tried"] += 1
        url = f"{scheme}://{user}{password}@{host}"
        try:
            AsyncQuickchat(api_key=API_KEY, scenario_id="s", base_url=url)
        except ValidationError as exc:
            message = str(exc)
        else:
            pytest.fail(f"{url!r} was accepted")
        assert "pw-9f2" not in message
        assert_no_secret(message, "the error")

    def test_from_the_environment_too(self, monkeypatch):
        """QUICKCHAT_BASE_URL goes through the same checks."""
        monkeypatch.setenv("QUICKCHAT_BASE_URL", f"https://me:{TOKEN}@app.quickchat.ai")
        with pytest.raises(ValidationError, match="embed credentials") as info:
            AsyncQuickchat(token=TOKEN, scenario_id="s")
        assert_no_secret(str(info.value), "the error")
