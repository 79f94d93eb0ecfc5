"""examples/telegram_bot.py: the real aiogram dispatcher polls a fake Bot API on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from quickchat_async import SQLiteStore
from quickchat_async.testing import Emulator

from ._support import framework, load_example, running, serving, until


if TYPE_CHECKING:
    from typing import Self


framework("aiogram")
from aiogram import Bot  # noqa: E402 -- once the framework is known to be there
from aiohttp import web  # noqa: E402 -- once the framework is known to be there


TOKEN = "123456:TEST-telegram-token"


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """aiogram is an asyncio library."""
    return "asyncio"


class FakeTelegram:
    """Telegram's Bot API as far as the bot uses it: updates in, messages and chat actions out."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.sent: list[tuple[int, str]] = []
        self.actions: list[tuple[int, str]] = []
        self.methods: list[str] = []
        self._ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post(f"/bot{TOKEN}/{{method}}", self.handle)

    def user_writes(self, chat_id: int, text: str) -> None:
        """Queue a private message from user `chat_id`, as getUpdates will deliver it."""
        message_id = next(self._ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"},
            "from": {"id": chat_id, "is_bot": False, "first_name": f"User {chat_id}"},
            "text": text,
        }
        if text.startswith("/"):
            length = len(text.partition(" ")[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        self.updates.append({"update_id": message_id, "message": message})
        self._new_update.set()

    def replies_to(self, chat_id: int) -> list[str]:
        return [text for chat, text in self.sent if chat == chat_id]

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = dict(await request.post())
        self.methods.append(method)
        if method == "getUpdates":
            result: object = await self.get_updates(params)
        elif method == "getMe":
            result = {"id": 1, "is_bot": True, "first_name": "Bot", "username": "quickchat_bot"}
        elif method == "sendMessage":
            chat_id, text = int(str(params["chat_id"])), str(params["text"])
            self.sent.append((chat_id, text))
            result = {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": text,
            }
        elif method == "sendChatAction":
            self.actions.append((int(str(params["chat_id"])), str(params["action"])))
            result = True
        elif method == "setMyCommands":
            result = True
        else:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": method}, status=404
            )
        return web.json_response({"ok": True, "result": result})

    async def get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long polling: the updates from `offset` on, waiting briefly when there are none.

        As Telegram does, asking from `offset` confirms the updates before it: they are gone.
        """
        offset = int(params.get("offset", 0))
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if not self.updates:
            self._new_update.clear()
            # Shorter than the bot's timeout, so that the server stops promptly too.
            timeout = min(float(params.get("timeout", 0)), 0.5)
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout)
            except TimeoutError:
                return []
        return self.updates


@pytest.fixture(name="telegram")
async def _telegram() -> AsyncIterator[tuple[FakeTelegram, str]]:
    """The fake Bot API on a loopback port, and its base URL."""
    fake = FakeTelegram()
    async with serving(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[Emulator]:
    """The Quickchat emulator, served on a loopback port."""
    async with Emulator(latency=0.05) as emulator:
        yield emulator


class RunningBot:
    """examples/telegram_bot.py polling the fake API, with its conversations in `db`."""

    def __init__(self, base_url: str, emulator: Emulator, db: Path) -> None:
        self.example = load_example("telegram_bot.py")
        self.clients: list[Any] = []

        def make_client() -> Any:
            self.clients.append(emulator.client())
            return self.clients[-1]

        self.dispatcher = self.example.create_dispatcher(
            make_client=make_client, make_store=lambda: SQLiteStore(db)
        )
        self.bot: Bot = self.example.create_bot(TOKEN, base_url)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(
            self.dispatcher.start_polling(self.bot, polling_timeout=1, handle_signals=False)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.task is not None
        # As on SIGTERM. A failing shutdown hook ends the polling task without the "stopped"
        # signal that stop_polling() waits for, so whichever ends first is enough.
        stopping = asyncio.create_task(self.dispatcher.stop_polling())
        await asyncio.wait({stopping, self.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await self.task


class TestTelegramBot:
    @pytest.mark.network
    @pytest.mark.anyio
    async def test_answers_each_user_in_order_in_their_own_conversation(
        self, telegram, emulator, tmp_path
    ):
        """Several users' messages in, each user's replies out in order, one conversation each."""
        fake, base_url = telegram
        async with RunningBot(base_url, emulator, tmp_path / "bot.db"):
            fake.user_writes(1, "Hello!")
            fake.user_writes(2, "Hi there")
            fake.user_writes(1, "How do refunds work?")
            fake.user_writes(2, "Do you gift-wrap?")
            fake.user_writes(1, "Thanks")
            await until(lambda: len(fake.sent) == 5)

        one, two = fake.replies_to(1), fake.replies_to(2)
        assert one[0].startswith("Hi there!")
        assert "Return policy: refunds" in one[1]
        assert "Gift wrapping" in two[1]
        conversations = {
            c.conv_id: emulator.user_messages(c.conv_id) for c in emulator.conversations()
        }
        assert sorted(conversations.values()) == [
            ("Hello!", "How do refunds work?", "Thanks"),
            ("Hi there", "Do you gift-wrap?"),
        ]
        assert {chat for chat, action in fake.actions if action == "typing"} == {1, 2}
        assert "setMyCommands" in fake.methods

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_continues_the_same_conversation_after_a_restart(
        self, telegram, emulator, tmp_path
    ):
        """A user's conversation outlives the bot: after a restart the same conv_id goes on."""
        fake, base_url = telegram
        db = tmp_path / "bot.db"
        async with RunningBot(base_url, emulator, db) as first:
            fake.user_writes(7, "Hello!")
            await until(lambda: len(fake.sent) == 1)
        assert all(client.is_closed for client in first.clients)  # the shutdown hook ran

        async with RunningBot(base_url, emulator, db):
            fake.user_writes(7, "How do refunds work?")
            await until(lambda: len(fake.sent) == 2)

        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("Hello!", "How do refunds work?")

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_reset_and_topic_start_new_conversations(self, telegram, emulator, tmp_path):
        """/topic starts a conversation filtered on its kb_topic; /reset starts a plain one."""
        fake, base_url = telegram
        async with RunningBot(base_url, emulator, tmp_path / "bot.db"):
            for text in ("Hello!", "/topic shipping", "How do returns work?", "/reset", "Hi"):
                fake.user_writes(3, text)
            await until(lambda: len(fake.sent) == 5)

        replies = fake.replies_to(3)
        assert replies[1] == "OK, a new conversation about shipping."
        assert "sending a parcel back" in replies[2]
        assert replies[3] == "OK, let's start over."
        first, shipping, plain = emulator.conversations()
        assert emulator.user_messages(shipping.conv_id) == ("How do returns work?",)
        assert emulator.messages(shipping.conv_id)[1].client_metadata == {"kb_topic": "shipping"}
        assert emulator.user_messages(first.conv_id) == ("Hello!",)
        assert emulator.user_messages(plain.conv_id) == ("Hi",)

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_tells_the_user_when_quickchat_is_busy(self, telegram, emulator, tmp_path):
        """A rate-limited turn answers "try again", not the server's error text."""
        fake, base_url = telegram
        emulator.faults.script(["rate_limit"] * 3)
        async with RunningBot(base_url, emulator, tmp_path / "bot.db"):
            fake.user_writes(4, "Hello!")
            await until(lambda: len(fake.sent) == 1)
        assert fake.replies_to(4) == [load_example("botkit.py").BUSY]


class TestTelegramBotCommand:
    @pytest.mark.network
    @pytest.mark.slow
    @pytest.mark.anyio
    async def test_runs_with_the_command_of_the_readme(self, telegram, tmp_path):
        """`python examples/telegram_bot.py` answers from the emulator and stops on Ctrl-C."""
        fake, base_url = telegram
        env = {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_SERVER": base_url,
            "BOT_DB": str(tmp_path / "bot.db"),
        }
        async with running("telegram_bot.py", env) as stderr:
            fake.user_writes(1, "How do refunds work?")
            await until(lambda: fake.sent, within=20)
        ((chat, reply),) = fake.sent
        assert chat == 1
        assert "Return policy: refunds" in reply
        assert any("talking to the bundled emulator" in line for line in stderr)
