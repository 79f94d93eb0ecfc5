"""examples/store_bot.py runs, answers several users, and resumes them after a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from quickchat_async import html_to_text
from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO_ID, TOKEN

from .conftest import recorded, replies


pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
BOT = ROOT / "examples" / "store_bot.py"


def run_bot(base_url: str, database: Path, lines: list[str]) -> list[str]:
    """Run the bot on these input lines until it exits; return its output lines, sorted."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "QUICKCHAT_API_TOKEN": TOKEN,
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
    return sorted(done.stdout.splitlines())


def output(*printed: str) -> list[str]:
    """What the bot prints, as run_bot returns it (a reply may span several lines)."""
    return sorted(line for text in printed for line in text.splitlines())


REFUNDS, CARDS = "How do refunds work?", "Which cards do you accept?"
INVOICE, SHIPPING = "Can I get an invoice?", "How long does shipping take?"


def test_bot_answers_and_resumes(tmp_path, served: Emulator):
    """The bot answers each user, and after a restart goes on with their conversations."""
    database = tmp_path / "bot.db"
    first = run_bot(served.base_url, database, [f"alice: {REFUNDS}", f"bob: {CARDS}", "nonsense"])
    second = run_bot(
        served.base_url, database, [f"alice: {INVOICE}", "bob: /forget", f"bob: {SHIPPING}"]
    )
    emulator = served

    assert sorted(recorded(emulator)) == sorted(
        [
            (REFUNDS, INVOICE),  # alice: one conversation across the restart
            (CARDS,),  # bob's first conversation, forgotten
            (SHIPPING,),  # bob's new one
        ]
    )
    # Each user is shown the reply the emulator gave to their own message (as plain text).
    reply = {text: html_to_text(html) for text, html in replies(emulator).items()}
    assert len(set(reply.values())) == 4
    assert first == output(
        f"[alice] {reply[REFUNDS]}",
        f"[bob] {reply[CARDS]}",
        "ignored (expected 'user: message'): 'nonsense'",
    )
    assert second == output(
        f"[alice] {reply[INVOICE]}",
        "[bob] (conversation forgotten)",
        f"[bob] {reply[SHIPPING]}",
    )
