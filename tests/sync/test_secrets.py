"""The blocking client keeps the secrecy rules: no credential in a repr, an error or locals.

Every test here also runs under the DEBUG-logging canary of the conftest.
"""

from __future__ import annotations

import json

import pytest

from quickchat_async import Quickchat, QuickchatError, ValidationError
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import FAULT_FAMILIES, every_view, rich_rendering, with_locals

from .conftest import API_KEY, TOKEN, assert_no_secret


rich_pretty = pytest.importorskip("rich.pretty")


class TestWhatTheBlockingClientHandsOut:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    def test_reprs_and_snapshots(self, emulator: Emulator, flavor):
        """Client, conversation, turns, snapshot, transport: no credential in any view."""
        with emulator.sync_client(flavor=flavor) as client:
            conv = client.conversation(kb_topic="billing")
            conv.say("Hello")
            emulator.faults.script([Fault("drop_after")])
            with pytest.raises(QuickchatError):
                conv.say("Are you there?")
            views = [client, client.config, conv, conv.history, conv.unconfirmed, client.transport]
            for value in views:
                assert_no_secret(every_view(value), f"a view of {type(value).__name__}")
            assert_no_secret(json.dumps(conv.snapshot()), "a snapshot")
            assert_no_secret(every_view(client.resume(conv.snapshot())), "a resumed conversation")

    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    @pytest.mark.parametrize("transport", ["httpx2", "httpx"])
    def test_errors_and_tracebacks_with_locals(self, served: Emulator, flavor, transport):
        """Each family of failure: message, repr, and tracebacks with every frame's locals."""
        with served.sync_client(
            flavor=flavor, transport=transport, max_response_bytes=16 * 1024
        ) as client:
            conv = client.conversation()
            conv.say("Hello")
            for fault in FAULT_FAMILIES:
                served.faults.script([fault])
                with pytest.raises(QuickchatError) as info:
                    conv.say(f"through {fault.kind.value}")
                exc = info.value
                for text in (str(exc), repr(exc), with_locals(exc), rich_rendering(exc)):
                    assert_no_secret(text, f"the {fault.kind.value} error")

    @pytest.mark.parametrize("credential", [{"token": TOKEN}, {"api_key": API_KEY}])
    def test_a_failed_constructor_shows_no_credential(self, credential):
        """A client that refuses its arguments holds no credential in its frames' locals."""
        with pytest.raises(ValidationError) as info:
            Quickchat(scenario_id="s", base_url="http://example.com", **credential)
        formatted = with_locals(info.value)
        # The test's own frame passed the credential in; the SDK's frames must not hold it.
        assert_no_secret(formatted[formatted.index("quickchat_async") :], "the constructor")
        assert_no_secret(rich_pretty.pretty_repr(info.value), "the constructor's error")
