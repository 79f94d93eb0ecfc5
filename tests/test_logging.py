"""The logging switch: QUICKCHAT_LOG=info|debug turns the SDK's logging on, to stderr.

Each case runs in a fresh interpreter, since the switch is read once, when the SDK is imported.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quickchat_async._logs import HeaderBlockFilter, configure_from_env

from ._wire import API_KEY, TOKEN


ROOT = Path(__file__).resolve().parents[1]

#: A bot's session: a turn, a turn retried after a 503, then an ambiguous failure; and then
#: which loggers below the SDK (those that could show headers) are at DEBUG.
SCRIPT = f"""
import logging
import anyio
import stamina
from quickchat_async import QuickchatError
from quickchat_async.emulator import Scenario
from quickchat_async.testing import Emulator

stamina.instrumentation.set_on_retry_hooks([])  # the SDK's own lines only
emulator = Emulator(scenarios=[Scenario("scn-log", tokens=({TOKEN!r},), api_keys=({API_KEY!r},))])

async def main(flavor):
    async with emulator.client(flavor=flavor) as client:  # OpenTelemetry too: both traces
        conv = client.conversation()
        await conv.say("Where is parcel 5501?")
        emulator.faults.script(["unavailable", None, "drop_after"])
        await conv.say("Still waiting for 5501")
        try:
            await conv.say("Cancel 5501")
        except QuickchatError:
            pass

with stamina.set_testing(True, attempts=3):
    anyio.run(main, "current")
    anyio.run(main, "legacy")
below = ("hpack", "httpcore", "httpx", "httpx2", "h2", "h11", "aiohttp")
debug = [name for name in below if logging.getLogger(name).isEnabledFor(logging.DEBUG)]
print("below at DEBUG:", debug)
"""


def run(level: str | None, script: str = SCRIPT) -> tuple[str, str]:
    """Run the session with QUICKCHAT_LOG=`level` (unset for None); its stdout and stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("QUICKCHAT_LOG", None)
    if level is not None:
        env["QUICKCHAT_LOG"] = level
    done = subprocess.run(  # noqa: S603 -- our own script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


class TestTheSwitch:
    def test_off_by_default(self):
        """Without QUICKCHAT_LOG the SDK writes nothing to stderr."""
        out, err = run(None)
        assert err == ""
        assert "below at DEBUG: []" in out

    @pytest.mark.parametrize("level", ["info", "INFO"])
    def test_info_shows_retries_without_message_text(self, level: str):
        """At info: the retries, on stderr; never a message text, never a credential."""
        out, err = run(level)
        assert "Retrying the Chat request" in err
        assert "INFO quickchat_async" in err
        assert "5501" not in err
        assert "DEBUG" not in err
        assert TOKEN not in err
        assert API_KEY not in err
        assert "below at DEBUG: []" in out

    def test_debug_shows_each_turn_with_its_text(self):
        """At debug: each turn with its text and reply, attempts and failures; no credential."""
        out, err = run("debug")
        assert "Turn to " in err
        assert "'Where is parcel 5501?'" in err
        assert "Reply in " in err
        assert "Attempt 1 failed: ServiceUnavailableError (outcome_unknown=False)" in err
        assert "Attempt 1 failed: APIConnectionError (outcome_unknown=True)" in err
        assert "Retrying the Chat request" in err
        for secret in (TOKEN, API_KEY, "Bearer"):
            assert secret not in err
        # The libraries below the SDK stay where they were: hpack's DEBUG shows header blocks.
        assert "below at DEBUG: []" in out

    def test_debug_keeps_the_http2_header_loggers_above_debug(self):
        """At debug, hpack and h2 stay above DEBUG even when the app logs everything at DEBUG."""
        everything = SCRIPT.replace(
            "stamina.instrumentation.set_on_retry_hooks([])",
            "logging.basicConfig(level=logging.DEBUG)\nstamina.instrumentation.set_on_retry_hooks([])",
        )
        out, _ = run("debug", everything)
        below = out.split("below at DEBUG:", 1)[1]
        assert "'hpack'" not in below
        assert "'h2'" not in below
        assert "'httpx2'" in below  # the app's own choice for the others stands

    def test_an_unknown_value_is_ignored(self):
        """A value other than info or debug leaves logging alone."""
        _, err = run("verbose")
        assert err == ""


class TestTheSwitchInProcess:
    """`configure_from_env()` itself, as the import runs it: once or twice, one handler."""

    @pytest.fixture(autouse=True)
    def _restore(self):
        names = ("quickchat_async", "hpack", "h2")
        saved = {
            name: (logging.getLogger(name).level, logging.getLogger(name).handlers[:])
            for name in names
        }
        yield
        for name, (level, handlers) in saved.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).handlers[:] = handlers

    def test_debug_adds_one_guarded_stderr_handler(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("QUICKCHAT_LOG", " DEBUG ")
        logging.getLogger("h2").setLevel(logging.DEBUG)
        configure_from_env()
        configure_from_env()  # a re-import adds no second handler
        logger = logging.getLogger("quickchat_async")
        added = [h for h in logger.handlers if type(h).__name__ == "_SwitchHandler"]
        assert len(added) == 1
        assert logger.level == logging.DEBUG
        assert any(isinstance(f, HeaderBlockFilter) for f in added[0].filters)
        assert logging.getLogger("h2").level == logging.INFO

    def test_an_unknown_value_changes_nothing(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("QUICKCHAT_LOG", "verbose")
        before = logging.getLogger("quickchat_async").handlers[:]
        configure_from_env()
        assert logging.getLogger("quickchat_async").handlers == before
