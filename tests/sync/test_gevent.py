"""The blocking client under gevent's monkey-patching (Locust's world), in a subprocess.

The emulator is served here, on loopback; `gevent_run.py` patches first, then drives the client
with greenlets, on the default transport (httpx2) and on the gevent transport.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from quickchat_async.testing import Emulator

from .cases import CASES, Outcome, check
from .conftest import SCENARIO, TOKEN, assert_no_secret, gevent_python


if importlib.util.find_spec("geventhttpclient") is None:  # only the subprocess imports gevent
    pytest.skip(
        "gevent is not installed: pip install 'quickchat-async[locust]'", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.parametrize("transport", ["httpx2", "gevent"]),
]


def run_under_gevent(emulator: Emulator, mode: str, transport: str) -> Any:
    """Run `gevent_run.py` in a fresh interpreter against the served emulator; its result."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "QUICKCHAT_BASE_URL": emulator.base_url,
        "QUICKCHAT_API_TOKEN": TOKEN,
        "QUICKCHAT_SCENARIO_ID": SCENARIO.scenario_id,
    }
    env.pop("QUICKCHAT_API_KEY", None)
    done = subprocess.run(  # noqa: S603 -- this interpreter, our own module
        gevent_python("-m", "tests.sync.gevent_run", mode, transport),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = json.loads(done.stdout.strip().splitlines()[-1])
    assert output["patched"]
    return output["result"]


class TestUnderGevent:
    def test_greenlets_share_one_conversation(self, served: Emulator, transport):
        """20 greenlets sending the first message of one conversation: one server conversation."""
        result = run_under_gevent(served, "one-conversation", transport)
        assert result["reply_conv_ids"] == [result["conv_id"]]
        assert result["history"] == 20
        assert result["server_conversations"] == [
            {"conv_id": result["conv_id"], "user_messages": 20}
        ]

    def test_greenlets_wait_together(self, served: Emulator, transport):
        """20 replies each 0.3 s late take about 0.3 s in all: waiting greenlets yield."""
        result = run_under_gevent(served, "concurrency", transport)
        assert result["replies"] == 20
        assert result["elapsed"] < 3.0  # 6 s one after the other

    def test_every_fault_becomes_its_error(self, served: Emulator, transport):
        """The fault table of the blocking client holds under gevent, on either transport."""
        results = run_under_gevent(served, "cases", transport)
        assert [result["name"] for result in results] == [case.name for case in CASES]
        for case, result in zip(CASES, results, strict=True):
            outcome = Outcome(
                result["error"],
                result["unknown"],
                result["message"],
                result["formatted"],
                result["elapsed"],
            )
            check(case, outcome, requests=result["requests"], recorded=result["recorded"])
            assert_no_secret(result["message"] + result["formatted"], f"the error of {case.name}")
