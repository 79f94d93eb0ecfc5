"""examples/store_bot.py runs, answers several users, and resumes them after a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SCENARIO_ID, FakeQuickchat


pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
BOT = ROOT / "examples" / "store_bot.py"


def run_bot(base_url: str, database: Path, lines: list[str]) -> list[str]:
    """Run the bot on these input lines until it exits; return its output lines."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "QUICKCHAT_API_TOKEN": "example-token",
        "QUICKCHAT_SCENARIO_ID": SCENARIO_ID,
        "QUICKCHAT_BASE_URL": base_url,
    }
    done = subprocess.run(  # noqa: S603 -- our own example
        [sys.executable, str(BOT), str(database)],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.fixture(name="fake")
def _fake() -> FakeQuickchat:
    return FakeQuickchat()


def test_bot_answers_and_resumes(fake, tmp_path):
    """The bot answers each user, and after a restart goes on with their conversations."""
    database = tmp_path / "bot.db"
    with fake.serve() as base_url:
        first = run_bot(base_url, database, ["alice: Hello!", "bob: Hi there", "nonsense"])
        second = run_bot(base_url, database, ["alice: Still there?", "bob: /forget", "bob: Hi"])

    assert sorted(first) == [
        "[alice] echo: Hello!",
        "[bob] echo: Hi there",
        "ignored (expected 'user: message'): 'nonsense'",
    ]
    assert sorted(second) == [
        "[alice] echo: Still there?",
        "[bob] (conversation forgotten)",
        "[bob] echo: Hi",
    ]
    assert sorted(fake.conversations.values()) == [
        ["Hello!", "Still there?"],  # alice: one conversation across the restart
        ["Hi"],  # bob's new one
        ["Hi there"],  # bob's first conversation, forgotten
    ]
