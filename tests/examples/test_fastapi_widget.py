"""examples/fastapi_widget.py: served by uvicorn on loopback, in front of a served emulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from quickchat_async import AsyncQuickchat, MemoryStore
from quickchat_async.testing import Emulator

from ._support import (
    framework,
    free_port,
    load_example,
    loopback_socket,
    running,
    until,
    wait_listening,
)


framework("fastapi")
import uvicorn  # noqa: E402 -- once the framework is known to be there


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """The example runs under uvicorn on asyncio."""
    return "asyncio"


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """`app` under uvicorn on a free loopback port, lifespan included; an HTTP client for it."""
    sock = loopback_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started)
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[Emulator]:
    """The Quickchat emulator, served on a loopback port."""
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture(name="make_client")
def _make_client(emulator: Emulator) -> Callable[[], AsyncQuickchat]:
    """Clients of the served emulator; `make_client.made` lists them."""
    made: list[AsyncQuickchat] = []

    def make_client() -> AsyncQuickchat:
        made.append(emulator.client())
        return made[-1]

    make_client.made = made  # type: ignore[attr-defined]
    return make_client


@pytest.fixture(name="http")
async def _http(make_client) -> AsyncIterator[httpx.AsyncClient]:
    """The widget backend served on loopback, and a client for it."""
    app = load_example("fastapi_widget.py").create_app(make_client, MemoryStore)
    async with served(app) as http:
        yield http


class TestFastAPIWidget:
    @pytest.mark.network
    @pytest.mark.anyio
    async def test_keeps_one_conversation_per_user(self, http, emulator):
        """Each user_id continues its own conversation; /topic and /reset start new ones."""

        async def say(user: str, text: str) -> str:
            response = await http.post("/messages", json={"user_id": user, "text": text})
            assert response.status_code == 200, response.text
            return str(response.json()["reply"])

        assert (await say("alice", "Hello!")).startswith("Hi there!")
        await say("bob", "Hi")
        assert "Return policy: refunds" in await say("alice", "How do refunds work?")
        assert await say("bob", "/topic shipping") == "OK, a new conversation about shipping."
        assert "Delivery times" in await say("bob", "How long does delivery take?")
        assert await say("alice", "/reset") == "OK, let's start over."

        texts = [emulator.user_messages(c.conv_id) for c in emulator.conversations()]
        assert texts == [
            ("Hello!", "How do refunds work?"),
            ("Hi",),
            ("How long does delivery take?",),
        ]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_rate_limited_is_a_429_with_retry_after(self, http, emulator):
        """When Quickchat rate-limits, the widget gets a 429 with Retry-After and a user message."""
        emulator.faults.script(["rate_limit"] * 3)  # the first attempt and both retries
        response = await http.post("/messages", json={"user_id": "u", "text": "Hello!"})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["error"] == "busy"
        assert body["retry_after"] == 1
        assert "try again" in body["message"]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_quickchat_down_is_a_503(self, http, emulator):
        """When Quickchat is unavailable, the widget gets a 503 and no server internals."""
        emulator.faults.script(["unavailable"] * 3)
        response = await http.post("/messages", json={"user_id": "u", "text": "Hello!"})
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert "Service Unavailable" not in response.text  # the server's own text stays in the log

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_a_lost_reply_is_a_502_outcome_unknown(self, http, emulator):
        """A message recorded but unanswered is a 502 saying it may not have arrived."""
        emulator.faults.script(["error_after"])
        response = await http.post("/messages", json={"user_id": "u", "text": "Hello!"})
        assert response.status_code == 502
        assert response.json()["error"] == "outcome_unknown"
        assert "may not have reached me" in response.json()["message"]
        assert "retry-after" not in response.headers

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_rejects_a_bad_request_without_calling_the_agent(self, http, emulator):
        """A missing field or empty text is a 422, and nothing reaches the AI Agent."""
        for body in ({"text": "Hi"}, {"user_id": "u", "text": ""}, {"user_id": "", "text": "Hi"}):
            assert (await http.post("/messages", json=body)).status_code == 422
        assert emulator.stats().requests == 0

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_documents_the_error_responses(self, http):
        """The OpenAPI schema lists the typed errors of POST /messages."""
        schema = (await http.get("/openapi.json")).json()
        responses = schema["paths"]["/messages"]["post"]["responses"]
        assert {"200", "422", "429", "502", "503"} <= responses.keys()
        assert responses["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_the_lifespan_owns_the_client(self, make_client):
        """The client is created once at start-up and closed at shutdown."""
        app = load_example("fastapi_widget.py").create_app(make_client, MemoryStore)
        async with served(app) as http:
            for text in ("Hello!", "Still there?"):
                await http.post("/messages", json={"user_id": "u", "text": text})
            (client,) = make_client.made
            assert not client.is_closed
        assert client.is_closed


class TestFastAPIWidgetCommand:
    @pytest.mark.network
    @pytest.mark.slow
    @pytest.mark.anyio
    async def test_runs_with_the_command_of_the_readme(self, tmp_path):
        """`python examples/fastapi_widget.py` serves the emulator's answers, stops on Ctrl-C."""
        port = free_port()
        env = {"PORT": str(port), "BOT_DB": str(tmp_path / "widget.db")}
        async with running("fastapi_widget.py", env) as stderr:
            await wait_listening(port)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.post(
                    "/messages", json={"user_id": "u", "text": "How do refunds work?"}
                )
        assert response.status_code == 200
        assert "Return policy: refunds" in response.json()["reply"]
        assert any("talking to the bundled emulator" in line for line in stderr)
