"""Bot workers in separate processes sharing one store: SQLite file or Redis.

Each worker is `worker.py`, talking to the emulator served on 127.0.0.1 (uvicorn, in a thread
of the test process). The emulator's record is what proves there is one conversation and no
turn lost or sent twice.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO_ID, TOKEN

from .conftest import recorded, redis_prefix


pytestmark = [pytest.mark.network, pytest.mark.slow]

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).parents[2]
#: How long any one answer from a worker may take, at most (a generous bound on a busy machine).
ANSWER_TIMEOUT = 60.0


class Worker:
    """A worker process; requests go in as JSON lines, answers come back the same way."""

    def __init__(self, base_url: str, store: str, lock_ttl: float | None = None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "QUICKCHAT_BASE_URL": base_url,
            "QUICKCHAT_API_TOKEN": TOKEN,
            "QUICKCHAT_SCENARIO_ID": SCENARIO_ID,
        }
        args = [sys.executable, str(WORKER), store]
        if lock_ttl is not None:
            args.append(str(lock_ttl))
        self.process = subprocess.Popen(  # noqa: S603 -- our own script and arguments
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(json.loads(line))

    def answer(self) -> dict[str, Any]:
        try:
            return self._answers.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            self.kill()
            assert self.process.stderr is not None
            pytest.fail(f"the worker did not answer; its stderr:\n{self.process.stderr.read()}")

    def wait_ready(self) -> None:
        assert self.answer() == {"ready": True}

    def send(self, op: str, user: str, text: str | None = None) -> None:
        self._next_id += 1
        request = {"id": self._next_id, "op": op, "user": user, "text": text}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def ask(self, op: str, user: str, text: str | None = None) -> dict[str, Any]:
        self.send(op, user, text)
        return self.answer()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=ANSWER_TIMEOUT)

    def close(self) -> None:
        """Close stdin, so the worker exits once it has answered everything."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdout, self.process.stderr, self.process.stdin):
            if stream is not None and not stream.closed:
                stream.close()


def wait_for_requests(emulator: Emulator, count: int) -> None:
    """Wait until the emulator has received `count` requests."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while emulator.stats().requests < count:
        assert time.monotonic() < deadline, f"the emulator did not get {count} requests"
        time.sleep(0.01)


@pytest.fixture(name="store", params=["sqlite", "redis"])
def _store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the workers keep conversations, as the worker's STORE argument."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'bot.db'}"
    return f"redis:{request.getfixturevalue('redis_url')}|{redis_prefix()}"


@pytest.fixture(name="workers")
def _workers(served: Emulator, store: str) -> Iterator[Any]:
    """Start workers on the shared store, talking to the served emulator; all stopped after."""
    started: list[Worker] = []

    def start(lock_ttl: float | None = None) -> Worker:
        worker = Worker(served.base_url, store, lock_ttl)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def test_two_first_messages_race(workers, served):
    """Two workers sending one user's first message at once start one conversation.

    Both replies come back, in order, and the store keeps both turns.
    """
    # The first reply is still on its way when the second message arrives.
    served.faults.script([Fault("slow_headers", delay=0.3)] * 2)
    one, two = workers(), workers()
    one.wait_ready()
    two.wait_ready()

    one.send("say", "user-1", "Hi from worker one")
    two.send("say", "user-1", "Hi from worker two")
    answers = [one.answer(), two.answer()]

    assert all(answer["ok"] for answer in answers), answers
    assert len({answer["conv_id"] for answer in answers}) == 1
    assert sorted(answer["ord_number"] for answer in answers) == [3, 5]
    (answered,) = recorded(served)
    assert answers[0]["conv_id"] == served.conversations()[0].conv_id
    assert one.ask("show", "user-1")["history"] == list(answered)
    assert sorted(answered) == ["Hi from worker one", "Hi from worker two"]
    assert served.stats().requests == 2


def test_killed_worker_mid_turn(workers, served):
    """A worker killed mid-turn: its lock expires, another worker goes on with the user.

    The server's record shows one conversation, no turn lost and none sent twice.
    """
    # The second request is not recorded, and is left unanswered for a minute.
    served.faults.script([None, Fault("drop_before", delay=60)])
    doomed = workers(lock_ttl=1.5)
    doomed.wait_ready()
    first = doomed.ask("say", "user-1", "Hello")
    doomed.send("say", "user-1", "Are you there?")
    wait_for_requests(served, 2)  # the turn is in flight, its lock held
    doomed.kill()
    killed_at = time.monotonic()

    survivor = workers()
    survivor.wait_ready()
    answer = survivor.ask("say", "user-1", "Hello again")

    assert answer["ok"], answer
    # It had to wait for the dead worker's lock (renewed at most 0.5 s before the kill).
    assert time.monotonic() - killed_at >= 0.5
    assert answer["conv_id"] == first["conv_id"]
    assert answer["history"] == ["Hello", "Hello again"]
    assert answer["ord_number"] == 5
    assert recorded(served) == [("Hello", "Hello again")]
    # Three requests: the dead worker's unanswered one was not sent again.
    stats = served.stats()
    assert (stats.requests, stats.replied, dict(stats.by_fault)) == (3, 2, {"drop_before": 1})


def test_restart_resumes_every_user(workers, served):
    """A restarted bot process resumes each user's conversation with its history."""
    users = ["alice", "bob", "carol"]
    before = workers()
    before.wait_ready()
    for user in users:
        before.send("say", user, f"{user} 1")
    for _ in users:
        assert before.answer()["ok"]
    for user in users:
        assert before.ask("say", user, f"{user} 2")["ok"]
    before.close()

    after = workers()
    after.wait_ready()
    for user in users:
        shown = after.ask("show", user)
        assert shown["history"] == [f"{user} 1", f"{user} 2"]
        answer = after.ask("say", user, f"{user} 3")
        assert answer["conv_id"] == shown["conv_id"]
        assert answer["ord_number"] == 7

    assert sorted(recorded(served)) == [(f"{u} 1", f"{u} 2", f"{u} 3") for u in users]
