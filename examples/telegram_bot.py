"""A Telegram bot that answers with your AI Agent (aiogram 3, long polling).

Each Telegram chat keeps one Quickchat conversation, stored in SQLite: restart the bot and
every chat goes on where it was. While a message is being answered, the chat shows "typing...".
/reset starts a new conversation, /topic <name> one on a Knowledge Base topic.

Create a bot with @BotFather, then:

    TELEGRAM_BOT_TOKEN=123456:ABC... python examples/telegram_bot.py

With no QUICKCHAT_API_TOKEN set it answers from the bundled emulator; set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID for your AI Agent. BOT_DB names the SQLite
file (telegram_bot.db), TELEGRAM_API_SERVER a local Bot API server, if you run one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command, CommandObject
from aiogram.types import BotCommand, Message
from aiogram.utils.chat_action import ChatActionSender
from botkit import Chats, chunks, make_client

from quickchat_async import AsyncQuickchat, ConversationStore, SQLiteStore


#: Telegram's longest message, in characters.
MAX_MESSAGE = 4096


def make_store() -> ConversationStore:
    """The bot's conversations, in a SQLite file that outlives the process."""
    return SQLiteStore(os.environ.get("BOT_DB", "telegram_bot.db"))


def create_dispatcher(
    make_client: Callable[[], AsyncQuickchat] = make_client,
    make_store: Callable[[], ConversationStore] = make_store,
) -> Dispatcher:
    """The bot's handlers; the Quickchat client and store live from start-up to shutdown."""
    dispatcher = Dispatcher()

    @dispatcher.startup()
    async def start(dispatcher: Dispatcher, bot: Bot) -> None:
        # Handlers receive it as their `chats` argument (aiogram's workflow data).
        dispatcher["chats"] = Chats(make_client(), make_store())
        await bot.set_my_commands(
            [
                BotCommand(command="reset", description="Start a new conversation"),
                BotCommand(command="topic", description="Start a conversation on a topic"),
            ]
        )

    @dispatcher.shutdown()
    async def stop(dispatcher: Dispatcher) -> None:
        await dispatcher["chats"].aclose()  # once the messages in flight are answered

    @dispatcher.message.outer_middleware()
    async def in_order(
        handler: Callable[[Message, dict[str, Any]], Awaitable[Any]],
        message: Message,
        data: dict[str, Any],
    ) -> Any:  # noqa: ANN401 -- whatever the handler returns
        # aiogram handles updates concurrently. Taking the chat's turn here, before the
        # filters run, keeps each chat's messages, and so its replies, in the order they came.
        chats: Chats = data["chats"]
        async with chats.in_order(chat_key(message)):
            return await handler(message, data)

    @dispatcher.message(Command("reset"))
    async def reset(message: Message, chats: Chats) -> None:
        await send(message, (await chats.reset(chat_key(message))).text)

    @dispatcher.message(Command("topic"))
    async def topic(message: Message, command: CommandObject, chats: Chats) -> None:
        await send(message, (await chats.set_topic(chat_key(message), command.args or "")).text)

    @dispatcher.message(F.text)
    async def chat(message: Message, bot: Bot, chats: Chats) -> None:
        async with ChatActionSender.typing(bot=bot, chat_id=message.chat.id):
            # Text for the AI Agent; other commands (/start...) get the list of commands.
            answer = await chats.answer(chat_key(message), message.text or "")
        await send(message, answer.text)

    return dispatcher


def chat_key(message: Message) -> str:
    """The conversation's user key: one per Telegram chat (a private chat is one user)."""
    return f"telegram:{message.chat.id}"


async def send(message: Message, text: str) -> None:
    """Answer in the message's chat, as plain text (no Markdown surprises), in pieces if long."""
    for piece in chunks(text, MAX_MESSAGE):
        await message.answer(piece, parse_mode=None)


def create_bot(token: str, api_server: str | None = None) -> Bot:
    """A Bot on Telegram's Bot API, or on the Bot API server at `api_server`."""
    if api_server is None:
        return Bot(token)
    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_server)))


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    bot = create_bot(os.environ["TELEGRAM_BOT_TOKEN"], os.environ.get("TELEGRAM_API_SERVER"))
    # Polls until Ctrl-C or SIGTERM, then runs the shutdown hook and closes the bot's session.
    await create_dispatcher().start_polling(bot)


if __name__ == "__main__":
    asyncio.run(main())
