"""Bot workers in separate processes sharing one store: SQLite file or Redis.

Each worker is `worker.py`, talking to the fake Chat endpoint served on 127.0.0.1. The fake's
record is what proves there is one conversation and no duplicated turn.
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

from .conftest import FakeQuickchat, redis_prefix


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
        }
        args = [sys.executable, str(WORKER), base_url, store]
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


@pytest.fixture(name="fake")
def _fake() -> FakeQuickchat:
    return FakeQuickchat()


@pytest.fixture(name="base_url")
def _base_url(fake: FakeQuickchat) -> Iterator[str]:
    with fake.serve() as url:
        yield url


@pytest.fixture(name="store", params=["sqlite", "redis"])
def _store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the workers keep conversations, as the worker's STORE argument."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'bot.db'}"
    return f"redis:{request.getfixturevalue('redis_url')}|{redis_prefix()}"


@pytest.fixture(name="workers")
def _workers(base_url: str, store: str) -> Iterator[Any]:
    """Start workers on the shared store; every one is stopped after the test."""
    started: list[Worker] = []

    def start(lock_ttl: float | None = None) -> Worker:
        worker = Worker(base_url, store, lock_ttl)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def test_two_first_messages_race(workers, fake):
    """Two workers sending one user's first message at once start one conversation.

    Both replies come back, in order, and the store keeps both turns.
    """
    fake.delay = 0.3  # the first turn is still in flight when the second one starts
    one, two = workers(), workers()
    one.wait_ready()
    two.wait_ready()

    one.send("say", "user-1", "Hi from worker one")
    two.send("say", "user-1", "Hi from worker two")
    answers = [one.answer(), two.answer()]

    assert all(answer["ok"] for answer in answers), answers
    assert len({answer["conv_id"] for answer in answers}) == 1
    assert sorted(answer["ord_number"] for answer in answers) == [3, 5]
    assert len(fake.conversations) == 1
    (answered,) = fake.conversations.values()
    assert one.ask("show", "user-1")["history"] == answered
    assert sorted(answered) == ["Hi from worker one", "Hi from worker two"]


def test_killed_worker_mid_turn(workers, fake):
    """A worker killed mid-turn: its lock expires, another worker goes on with the user.

    The server's record shows one conversation, no turn lost and none sent twice.
    """
    fake.hang = {"Are you there?"}
    doomed = workers(lock_ttl=1.5)
    doomed.wait_ready()
    first = doomed.ask("say", "user-1", "Hello")
    doomed.send("say", "user-1", "Are you there?")
    assert fake.hanging.wait(timeout=ANSWER_TIMEOUT)
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
    assert fake.texts() == ["Hello", "Hello again"]
    sent = [body["text"] for body in fake.received]
    assert sent == ["Hello", "Are you there?", "Hello again"]


def test_restart_resumes_every_user(workers, fake):
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

    assert len(fake.conversations) == 3
    assert sorted(fake.conversations.values()) == [[f"{u} 1", f"{u} 2", f"{u} 3"] for u in users]
