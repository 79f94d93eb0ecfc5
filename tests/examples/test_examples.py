"""The scripts in examples/ run as a user runs them, against the emulator by default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from quickchat_async import MemoryStore
from quickchat_async.emulator import EmulatorService, ServerHandle, serve
from quickchat_async.testing import Emulator

from ._support import EXAMPLES, ROOT, load_example


def run_example(name: str, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """Run `examples/<name>` in a fresh interpreter; return its stdout (it must exit 0)."""
    done = subprocess.run(  # noqa: S603 -- our own example
        [sys.executable, str(EXAMPLES / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        },
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(name="served")
def _served() -> Iterator[ServerHandle]:
    """The emulator on a loopback port, for examples pointed at it through QUICKCHAT_*."""
    with serve(EmulatorService()) as server:
        yield server


class TestAsyncioBot:
    def test_answers_each_line_from_the_emulator_by_default(self):
        """With no credentials, the bot talks to the bundled emulator and answers every line."""
        out = run_example("asyncio_bot.py", "billing", stdin="Hello!\n\nHow do refunds work?\n")
        assert "you: Hello!\nbot: Hi there!" in out
        assert "Source: Return policy: refunds" in out
        assert "2 of 2 turns confirmed" in out

    @pytest.mark.network
    def test_environment_points_it_at_another_endpoint(self, served):
        """QUICKCHAT_* variables take it to that endpoint: one conversation, every message."""
        env = {
            "QUICKCHAT_API_KEY": "demo-key",
            "QUICKCHAT_SCENARIO_ID": "demo",
            "QUICKCHAT_BASE_URL": served.base_url,
        }
        run_example("asyncio_bot.py", stdin="Hello!\nDo you gift-wrap?\n", env=env)
        (conversation,) = served.service.conversations()
        assert served.service.user_messages(conversation.conv_id) == ("Hello!", "Do you gift-wrap?")

    @pytest.mark.anyio
    async def test_reports_a_turn_whose_outcome_is_unknown(self, capsys):
        """A reply lost after sending is reported as maybe-arrived, and the chat goes on."""
        bot = load_example("asyncio_bot.py")
        emulator = Emulator()
        async with emulator.client() as client:
            conv = client.conversation()
            emulator.faults.script(["drop_after", "unavailable"])
            await bot.chat(conv, "Hello!")
            await bot.chat(conv, "Still there?")
        out = capsys.readouterr().out
        assert "(no reply; the message may not have arrived)" in out
        assert "bot: " in out.splitlines()[-1]


class TestTrioBot:
    def test_asks_under_each_topic(self):
        """Each topic's conversation gets its own answers, filtered by its kb_topic."""
        out = run_example("trio_bot.py", "billing", "shipping")
        billing, shipping = out.split("[shipping]")
        assert "How do refunds work? -> Once your return reaches our warehouse" in billing
        assert "How long does delivery take? -> Standard delivery takes" in shipping

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_one_failing_conversation_does_not_stop_the_others(self):
        """A conversation whose turn fails reports the error; the other topics still finish."""
        bot = load_example("trio_bot.py")
        emulator = Emulator()
        answers: dict[str, list[str]] = {}
        async with emulator.client(max_retries=0) as client:
            emulator.faults.script(["error_before"])
            await bot.ask(client, "billing", answers)
            await bot.ask(client, "shipping", answers)
        (failure,) = answers["billing"]
        assert failure.startswith("Hello! -> (error) Quickchat failed with a server error (500")
        assert len(answers["shipping"]) == len(bot.QUESTIONS)


@pytest.fixture(name="relay")
async def _relay() -> AsyncIterator[tuple[httpx.AsyncClient, Emulator]]:
    """The relay app on an in-process emulator, reached through httpx's ASGI transport."""
    relay = load_example("starlette_relay.py")
    emulator = Emulator()
    app = relay.create_app(make_client=emulator.client, make_store=MemoryStore)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://relay.test"
        ) as http,
    ):
        yield http, emulator


class TestStarletteRelay:
    @pytest.mark.anyio
    async def test_keeps_one_conversation_per_visitor(self, relay):
        """Each visitor's cookie maps to one conversation; two visitors get two."""
        http, emulator = relay
        alice = await http.post("/chat", json={"message": "Hello!"})
        alice_cookie = http.cookies["visitor"]
        http.cookies.clear()  # another browser
        bob = await http.post("/chat", json={"message": "Hi"})
        http.cookies.clear()
        http.cookies["visitor"] = alice_cookie  # Alice comes back
        again = await http.post("/chat", json={"message": "How do refunds work?"})
        assert (alice.status_code, bob.status_code, again.status_code) == (200, 200, 200)
        assert "Return policy: refunds" in again.json()["reply"]
        texts = sorted(emulator.user_messages(c.conv_id) for c in emulator.conversations())
        assert texts == [("Hello!", "How do refunds work?"), ("Hi",)]

    @pytest.mark.anyio
    async def test_rejects_a_bad_message_without_calling_the_agent(self, relay):
        """A missing or empty message is a 400, and nothing reaches the AI Agent."""
        http, emulator = relay
        for body in ({"text": "Hi"}, {"message": "  "}, ["Hi"]):
            assert (await http.post("/chat", json=body)).status_code == 400
        assert (await http.post("/chat", content=b"not json")).status_code == 400
        assert emulator.stats().requests == 0

    @pytest.mark.anyio
    async def test_maps_agent_failures_to_safe_answers(self, relay):
        """Overload is a 503 "try again", other failures a 502 with no internals."""
        http, emulator = relay
        emulator.faults.script(["rate_limit"] * 3 + ["error_after"])
        busy = await http.post("/chat", json={"message": "Hello!"})
        failed = await http.post("/chat", json={"message": "Hello!"})
        assert (busy.status_code, failed.status_code) == (503, 502)
        assert failed.json() == {"error": "Sorry, something went wrong."}

    @pytest.mark.anyio
    async def test_default_app_starts_on_the_emulator(self):
        """The module's `app`, with no credentials set, answers from the bundled emulator."""
        relay = load_example("starlette_relay.py")
        app = relay.app
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://relay.test"
            ) as http,
        ):
            response = await http.post("/chat", json={"message": "Hello!"})
        assert response.json()["reply"].startswith("Hi there!")
