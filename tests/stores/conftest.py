"""Fixtures for the conversation stores: a client of the emulator, a real Redis, the stores.

Conversations go to the project's emulator with the test credentials: in process (`emulator`
of tests/conftest.py), or served on 127.0.0.1 (`served`) for tests whose workers are separate
processes. Its record (the conversations and the user messages in them, and its request
counters) is what proves there is one conversation per user and no turn lost or sent twice.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quickchat_async import AsyncQuickchat, MemoryStore, RedisStore, SQLiteStore
from quickchat_async.emulator import EmulatorService, Role
from quickchat_async.testing import Emulator


@pytest.fixture(name="client")
async def _client(emulator: Emulator) -> AsyncIterator[AsyncQuickchat]:
    """A client of the in-process emulator that never retries (each turn is one request)."""
    async with emulator.client(max_retries=0) as client:
        yield client


def recorded(service: EmulatorService | Emulator) -> list[tuple[str, ...]]:
    """The user messages of every conversation on the emulator, oldest conversation first."""
    return [service.user_messages(conv.conv_id) for conv in service.conversations()]


def replies(service: EmulatorService | Emulator) -> dict[str, str]:
    """Each user message recorded on the emulator -> the reply it got (texts must be unique)."""
    answered: dict[str, str] = {}
    for conv in service.conversations():
        messages = [m for m in conv.messages if m.role is not Role.GREETING]
        for message, reply in zip(messages[::2], messages[1::2], strict=True):
            assert message.role is Role.USER
            assert reply.role is Role.ASSISTANT
            assert message.text not in answered, f"{message.text!r} was sent twice"
            answered[message.text] = reply.text
    return answered


# --- Redis -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session", name="redis_url")
def _redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1, started for the session and stopped after it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "redis-server is not installed (Debian: apt-get install redis-server); the "
            "RedisStore tests need a real server"
        )
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    # Loopback only, no persistence, files in a temporary directory.
    options = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir)]
    options += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
    process = subprocess.Popen(  # noqa: S603 -- our own arguments
        [binary, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def redis_prefix() -> str:
    """A prefix of its own for each test, so tests sharing the server never meet."""
    return f"test-{uuid.uuid4().hex[:12]}:"


# --- stores --------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop RedisStore tests on trio: redis.asyncio runs on asyncio only, so they cannot exist.

    (One test checks that RedisStore says so clearly on trio.)
    """
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        redis_on_trio = params.get("anyio_backend") == "trio" and "redis" in params.values()
        (drop if redis_on_trio else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


STORE_KINDS = ["memory", "sqlite", "redis"]
SHARED_STORE_KINDS = ["sqlite", "redis"]


@pytest.fixture(name="store_factory")
async def _store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    """A function making stores of one kind that share one backend (file or Redis prefix)."""
    kind = request.param
    made: list[MemoryStore | SQLiteStore | RedisStore] = []
    if kind == "memory":
        shared = MemoryStore()

        def make() -> MemoryStore | SQLiteStore | RedisStore:
            return shared

    elif kind == "sqlite":
        path = tmp_path / "conversations.db"

        def make() -> MemoryStore | SQLiteStore | RedisStore:
            made.append(SQLiteStore(path))
            return made[-1]

    else:
        url = request.getfixturevalue("redis_url")
        prefix = redis_prefix()

        def make() -> MemoryStore | SQLiteStore | RedisStore:
            made.append(RedisStore(url, prefix=prefix))
            return made[-1]

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture(name="store")
async def _store(store_factory) -> AsyncIterator[MemoryStore | SQLiteStore | RedisStore]:
    store = store_factory()
    async with store:
        yield store
