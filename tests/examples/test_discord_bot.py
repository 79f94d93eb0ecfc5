"""examples/discord_bot.py: discord.py's REST side against a fake Discord API on loopback.

Without Discord's gateway, the test goes as far as this: the bot logs in over HTTP (which runs
its `setup_hook`) and syncs its commands; each command arrives as the INTERACTION_CREATE
payload the gateway would deliver, handed to discord.py where its gateway hands it over
(`ConnectionState.parse_interaction_create`), so the real CommandTree parses and runs it; the
deferral and the follow-up go over HTTP to the fake API; `close()` closes the bot. The
websocket itself (identify, heartbeats, resume) is not exercised.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quickchat_async import AsyncQuickchat, MemoryStore
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from ._support import framework, load_example, serving, until


discord = framework("discord")
from aiohttp import web  # noqa: E402


APP_ID = "1000"
BOT_USER = {
    "id": APP_ID,
    "username": "quickchat",
    "discriminator": "0",
    "avatar": None,
    "bot": True,
}


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """discord.py is an asyncio library."""
    return "asyncio"


def reply(data: object, status: int = 200) -> web.Response:
    """JSON as Discord sends it: discord.py reads a body as JSON only for exactly this type."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


class FakeDiscord:
    """Discord's HTTP API as far as the bot uses it, recording each call with its time."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self._ids = itertools.count(5000)
        self.app = web.Application()
        self.app.router.add_route("*", "/api/v10/{path:.*}", self.handle)

    def callbacks(self) -> list[tuple[float, str, Any]]:
        """The interaction responses (deferrals): time, interaction path, body."""
        return [
            (t, path, body) for t, method, path, body in self.calls if path.endswith("/callback")
        ]

    def follow_ups(self) -> list[tuple[float, str, Any]]:
        """The follow-up messages: time, webhook path, body."""
        return [
            (t, path, body) for t, method, path, body in self.calls if path.startswith("webhooks/")
        ]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.json() if request.can_read_body else None
        self.calls.append((time.monotonic(), request.method, path, body))
        if path == "users/@me":
            return reply(BOT_USER)
        if path == "oauth2/applications/@me":
            return reply(
                {
                    "id": APP_ID,
                    "name": "quickchat",
                    "description": "",
                    "icon": None,
                    "bot_public": False,
                    "bot_require_code_grant": False,
                    "owner": {**BOT_USER, "id": "1", "bot": False},
                    "verify_key": "0" * 64,
                    "flags": 0,
                }
            )
        if path == f"applications/{APP_ID}/commands" and request.method == "PUT":
            self.commands = [
                {**c, "id": str(next(self._ids)), "application_id": APP_ID} for c in body
            ]
            return reply(self.commands)
        if path.endswith("/callback"):
            interaction_id = path.split("/")[1]
            return reply(
                {"interaction": {"id": interaction_id, "type": 2, "response_message_loading": True}}
            )
        if path.startswith("webhooks/"):
            return reply(
                {
                    "id": str(next(self._ids)),
                    "channel_id": "4000",
                    "type": 0,
                    "content": body["content"],
                    "author": BOT_USER,
                    "timestamp": "2026-01-01T00:00:00+00:00",
                    "edited_timestamp": None,
                    "tts": False,
                    "mention_everyone": False,
                    "mentions": [],
                    "mention_roles": [],
                    "attachments": [],
                    "embeds": [],
                    "pinned": False,
                    "flags": 0,
                }
            )
        return reply({"message": "404: Not Found", "code": 0}, status=404)


class Gateway:
    """Hands the bot INTERACTION_CREATE payloads, as Discord's gateway would."""

    def __init__(self, bot: Any, fake: FakeDiscord) -> None:
        self.bot = bot
        self.fake = fake
        self._ids = itertools.count(7000)

    def command(self, name: str, user: int, /, **options: str) -> str:
        """User `user` runs `/name` in a DM with the bot; returns the interaction's token."""
        (registered,) = (c for c in self.fake.commands if c["name"] == name)
        number = next(self._ids)
        token = f"interaction-token-{number}"
        payload = {
            "id": str(number),
            "application_id": APP_ID,
            "type": 2,
            "token": token,
            "version": 1,
            "data": {
                "id": registered["id"],
                "name": name,
                "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
            },
            "channel_id": "4000",
            "channel": {"id": "4000", "type": 1},
            "user": {
                "id": str(user),
                "username": f"user{user}",
                "discriminator": "0",
                "avatar": None,
            },
            "locale": "en-US",
            "app_permissions": "0",
            "entitlements": [],
            "attachment_size_limit": 10_485_760,
            "authorizing_integration_owners": {"1": str(user)},
            "context": 1,
        }
        self.bot._connection.parse_interaction_create(payload)
        return token

    def answers(self, token: str) -> list[str]:
        """The follow-up texts of one interaction."""
        return [body["content"] for _, path, body in self.fake.follow_ups() if token in path]


@pytest.fixture(name="discord_api")
async def _discord_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """The fake Discord API on a loopback port; discord.py's requests all go there."""
    fake = FakeDiscord()
    async with serving(fake.app) as base_url:
        # discord.py has no setting for its API URL: every request is built on Route.BASE.
        monkeypatch.setattr(discord.http.Route, "BASE", f"{base_url}/api/v10")
        yield fake


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[Emulator]:
    """The Quickchat emulator, served on a loopback port; it takes 0.3 s to reply."""
    async with Emulator(latency=0.3) as emulator:
        yield emulator


@pytest.fixture(name="bot")
async def _bot(discord_api, emulator) -> AsyncIterator[tuple[Any, Gateway, list[AsyncQuickchat]]]:
    """The example's bot, logged in to the fake API, talking to the served emulator."""
    clients: list[AsyncQuickchat] = []

    def make_client() -> AsyncQuickchat:
        clients.append(emulator.client())
        return clients[-1]

    bot = load_example("discord_bot.py").QuickchatBot(make_client, MemoryStore, deadline=1.0)
    try:
        await bot.login("discord-bot-token")
        yield bot, Gateway(bot, discord_api), clients
    finally:
        await bot.close()


class TestDiscordBot:
    @pytest.mark.network
    @pytest.mark.anyio
    async def test_login_runs_the_setup_hook_and_registers_the_commands(self, bot, discord_api):
        """Logging in creates the Quickchat client and syncs /ask, /reset and /topic."""
        _, _, clients = bot
        assert len(clients) == 1
        assert not clients[0].is_closed
        assert sorted(c["name"] for c in discord_api.commands) == ["ask", "reset", "topic"]
        (ask,) = (c for c in discord_api.commands if c["name"] == "ask")
        assert [o["name"] for o in ask["options"]] == ["message"]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_defers_at_once_then_answers_with_a_follow_up(self, bot, discord_api, emulator):
        """The deferral goes out before the Agent replies; the answer follows it."""
        _, gateway, _ = bot
        started = time.monotonic()
        token = gateway.command("ask", 42, message="How do refunds work?")
        await until(lambda: gateway.answers(token))

        ((deferred_at, path, body),) = discord_api.callbacks()
        assert token in path
        assert body == {"type": 5}  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "is thinking..."
        assert deferred_at - started < 0.3  # the emulator takes 0.3 s to reply
        ((answered_at, _, follow_up),) = discord_api.follow_ups()
        assert answered_at > deferred_at
        assert "Return policy: refunds" in follow_up["content"]
        assert follow_up["allowed_mentions"] == {"parse": []}  # the Agent's text pings no one
        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("How do refunds work?",)

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_keeps_one_conversation_per_user(self, bot, discord_api, emulator):
        """Each user's questions go on in their own conversation; /topic and /reset start anew."""
        _, gateway, _ = bot
        tokens = [
            gateway.command("ask", 1, message="Hello!"),
            gateway.command("ask", 2, message="Hi"),
            gateway.command("ask", 1, message="Do you gift-wrap?"),
            gateway.command("topic", 2, name="shipping"),
            gateway.command("ask", 2, message="How long does delivery take?"),
        ]
        await until(lambda: all(gateway.answers(token) for token in tokens))
        assert gateway.answers(tokens[3]) == ["OK, a new conversation about shipping."]
        (topic_deferral,) = (body for _, path, body in discord_api.callbacks() if tokens[3] in path)
        assert topic_deferral == {"type": 5, "data": {"flags": 64}}  # only the user sees it

        texts = sorted(emulator.user_messages(c.conv_id) for c in emulator.conversations())
        assert texts == [
            ("Hello!", "Do you gift-wrap?"),
            ("Hi",),
            ("How long does delivery take?",),
        ]
        reset = gateway.command("reset", 1)
        await until(lambda: gateway.answers(reset))
        assert gateway.answers(reset) == ["OK, let's start over."]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_a_turn_past_the_deadline_may_not_have_arrived(self, bot, emulator):
        """A reply later than the deadline is answered "may not have arrived", not awaited."""
        _, gateway, _ = bot
        emulator.faults.script([Fault("slow_headers", delay=3.0)])  # the bot's deadline is 1 s
        started = time.monotonic()
        token = gateway.command("ask", 9, message="Hello!")
        await until(lambda: gateway.answers(token))
        assert time.monotonic() - started < 2.5
        assert gateway.answers(token) == [load_example("botkit.py").MAYBE_LOST]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_close_closes_the_quickchat_client(self, discord_api, emulator):
        """Closing the bot closes the client and store its setup hook created."""
        clients: list[AsyncQuickchat] = []

        def make_client() -> AsyncQuickchat:
            clients.append(emulator.client())
            return clients[-1]

        bot = load_example("discord_bot.py").QuickchatBot(make_client, MemoryStore)
        await bot.login("discord-bot-token")
        await bot.close()
        assert clients[0].is_closed
