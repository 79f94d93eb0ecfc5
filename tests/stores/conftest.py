"""Fixtures for the conversation stores: a fake Chat endpoint, a real Redis, and the stores.

`FakeQuickchat` stands in for the Chat endpoint until the emulator lands on main: a new conv_id
on a message without one, `ord_number` 3, 5, 7, ... per answered turn, and the 400 of an unknown
conv_id. It is served in process (`httpx.MockTransport`) or over HTTP on 127.0.0.1 for tests
whose workers are separate processes.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from quickchat_async import AsyncQuickchat, MemoryStore, RedisStore, SQLiteStore


TOKEN = "qc-test-token-do-not-store-7f3a"
SCENARIO_ID = "scenario-stores"


class FakeQuickchat:
    """A thread-safe stand-in for the Chat endpoint, recording what it was sent.

    Attributes:
        conversations: conv_id -> the texts answered in it, in order.
        received: every request body, in arrival order (answered or not).
        delay: seconds to wait before answering, so that concurrent turns overlap.
        hang: texts that are never answered (the request waits until `release` is set).
        fail: statuses to answer the next requests with, one each, before answering normally.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.conversations: dict[str, list[str]] = {}
        self.received: list[dict[str, object]] = []
        self.delay = 0.0
        self.hang: set[str] = set()
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.fail: list[int] = []

    def receive(self, body: dict[str, object]) -> int | None:
        """Record a request; return the error status to answer with, if one is due."""
        with self._lock:
            self.received.append(body)
            return self.fail.pop(0) if self.fail else None

    def answer(self, body: dict[str, object]) -> tuple[int, str]:
        """The status and body of the answer to a recorded request."""
        text = str(body["text"])
        with self._lock:
            conv_id = body.get("conv_id")
            if conv_id is None:
                conv_id = f"conv-{uuid.uuid4().hex[:12]}"
                self.conversations[conv_id] = []
            elif conv_id not in self.conversations:
                return 400, f"Conversation conv_id {conv_id} is not valid."
            turns = self.conversations[str(conv_id)]
            turns.append(text)
            ord_number = 1 + 2 * len(turns)
        reply = {"conv_id": conv_id, "reply": f"echo: {text}", "ord_number": ord_number, "src": 0}
        return 200, json.dumps(reply)

    def texts(self) -> list[str]:
        """Every answered text, over all conversations."""
        with self._lock:
            return [text for turns in self.conversations.values() for text in turns]

    # --- in process -------------------------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        status = self.receive(body)
        if status is not None:
            return httpx.Response(status, text="Internal error")
        if self.delay:
            await anyio.sleep(self.delay)
        if body["text"] in self.hang:
            self.hanging.set()
            await anyio.sleep_forever()
        status, content = self.answer(body)
        return httpx.Response(status, content=content.encode())

    # --- over HTTP, for other processes -------------------------------------------------------

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 on a free port; yield the base URL."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                status = fake.receive(body)
                content = "Internal error"
                if status is None:
                    if fake.delay:
                        time.sleep(fake.delay)
                    if body["text"] in fake.hang:
                        fake.hanging.set()
                        fake.release.wait(timeout=60)
                        return
                    status, content = fake.answer(body)
                data = content.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            fake.release.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@pytest.fixture(name="api")
def _api() -> FakeQuickchat:
    return FakeQuickchat()


def make_client(api: FakeQuickchat, **options: object) -> AsyncQuickchat:
    """A client whose requests go to `api`, in process."""
    http_client = httpx.AsyncClient(transport=httpx.MockTransport(api.handler))
    return AsyncQuickchat(
        token=TOKEN,
        scenario_id=SCENARIO_ID,
        http_client=http_client,
        max_retries=0,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(name="client")
async def _client(api: FakeQuickchat) -> AsyncIterator[AsyncQuickchat]:
    client = make_client(api)
    async with client:
        yield client
    await client.transport.client.aclose()  # type: ignore[attr-defined]


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
