"""Running code on event loops of its own: a script in a fresh `python -W error`, or threads.

The scripts are what a user would write (`asyncio.run()` per call, `trio.run()`, a loop per
thread), run against the served emulator: a connection the SDK left open would warn as it is
collected, and anything on stderr fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from quickchat_async.testing import Emulator

from .conftest import SCENARIO_ID, TOKEN


#: Every script's opening: the client's credentials come from the environment, as a user's do.
PREAMBLE = """
import asyncio, gc, sys, threading
import trio
from quickchat_async import AsyncQuickchat, SQLiteStore, RedisStore
url, transport = sys.argv[1], sys.argv[2]

def client(**options):
    return AsyncQuickchat(base_url=url, transport=transport, **options)

def report(reply):
    print(reply.conv_id, reply.ord_number, flush=True)
"""
#: Every script's end: whatever the SDK left unclosed warns now, while `-W error` holds.
EPILOGUE = """
gc.collect()
"""
#: How long one script may take (each turn is a few milliseconds).
SCRIPT_DEADLINE = 60


def run_script(body: str, url: str, transport: str = "httpx2", *more: str) -> list[str]:
    """Run a script in a fresh `python -W error`; what it printed, line by line.

    It must exit cleanly and write nothing to stderr: no warning, no "Exception ignored".
    """
    env = {
        **os.environ,
        "QUICKCHAT_API_TOKEN": TOKEN,
        "QUICKCHAT_SCENARIO_ID": SCENARIO_ID,
    }
    completed = subprocess.run(  # noqa: S603 -- this interpreter, with the test's own script
        [sys.executable, "-W", "error", "-c", PREAMBLE + body + EPILOGUE, url, transport, *more],
        capture_output=True,
        text=True,
        env=env,
        timeout=SCRIPT_DEADLINE,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return completed.stdout.splitlines()


def one_conversation(lines: list[str], served: Emulator, *, turns: int) -> None:
    """The lines report `turns` replies in one server conversation, numbered on from the first."""
    conv_ids = {line.split()[0] for line in lines}
    ord_numbers = [int(line.split()[1]) for line in lines]
    assert len(conv_ids) == 1
    assert ord_numbers == [3 + 2 * n for n in range(turns)]
    assert len(served.conversations()) == 1
    assert served.user_messages(conv_ids.pop()) == tuple(f"turn {n}" for n in range(turns))


def in_threads(*functions: Callable[[], Any]) -> list[Any]:
    """Run each function in a thread of its own, at once: their results, or the first error."""
    results: list[Any] = [None] * len(functions)
    errors: list[BaseException] = []

    def run(index: int, function: Callable[[], Any]) -> None:
        try:
            results[index] = function()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(index, function), name=f"loop-{index}")
        for index, function in enumerate(functions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SCRIPT_DEADLINE)
        assert not thread.is_alive(), f"{thread.name} is stuck"
    if errors:
        raise errors[0]
    return results
