"""A Discord bot that answers with your AI Agent (discord.py 2, slash commands).

`/ask <message>` asks the AI Agent; `/reset` starts a new conversation; `/topic <name>` one on a
Knowledge Base topic. Each Discord user keeps one Quickchat conversation, stored in SQLite.

Discord wants a first response to a command within 3 seconds, so every command defers at once
(the user sees "<bot> is thinking...") and answers with a follow-up message when the Agent has
replied. A turn that takes longer than DEADLINE seconds is answered "may not have arrived".

Invite the bot with the applications.commands scope, then:

    DISCORD_BOT_TOKEN=... python examples/discord_bot.py

With no QUICKCHAT_API_TOKEN set it answers from the bundled emulator; set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID for your AI Agent. BOT_DB names the SQLite
file (discord_bot.db). DISCORD_GUILD_ID registers the commands on that server only, where
they appear at once: handy while you develop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import discord
from botkit import Chats, chunks, make_client
from discord import app_commands

from quickchat_async import AsyncQuickchat, ConversationStore, SQLiteStore


#: Seconds a turn may take, retries included, before the user hears it may not have arrived.
#: The follow-up could wait 15 minutes; a person waits less.
DEADLINE = 20.0
#: Discord's longest message, in characters.
MAX_MESSAGE = 2000
#: The Agent's text may contain "@everyone": it must not ping anybody.
NO_PINGS = discord.AllowedMentions.none()


def make_store() -> ConversationStore:
    """The bot's conversations, in a SQLite file that outlives the process."""
    return SQLiteStore(os.environ.get("BOT_DB", "discord_bot.db"))


class QuickchatBot(discord.Client):
    """The bot: its slash commands, and the Quickchat client and store from login to close."""

    def __init__(
        self,
        make_client: Callable[[], AsyncQuickchat] = make_client,
        make_store: Callable[[], ConversationStore] = make_store,
        *,
        guild_id: int | None = None,
        deadline: float = DEADLINE,
    ) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self._make_client, self._make_store = make_client, make_store
        self._guild = discord.Object(guild_id) if guild_id is not None else None
        self._deadline = deadline
        self._chats: Chats | None = None
        self.tree.command(description="Ask the AI Agent")(self.ask)
        self.tree.command(description="Start a new conversation")(self.reset)
        self.tree.command(description="Start a conversation on a topic")(self.topic)

    async def setup_hook(self) -> None:
        """Runs once, after login and before the gateway connects."""
        self._chats = Chats(self._make_client(), self._make_store(), deadline=self._deadline)
        if self._guild is not None:
            self.tree.copy_global_to(guild=self._guild)
        await self.tree.sync(guild=self._guild)

    async def close(self) -> None:
        """Answer the commands in flight, close the Quickchat client and store, then Discord."""
        if self._chats is not None:
            await self._chats.aclose()
        await super().close()

    @property
    def chats(self) -> Chats:
        """The Quickchat side, from setup_hook() on."""
        if self._chats is None:
            raise RuntimeError("The bot has not logged in yet.")
        return self._chats

    @app_commands.describe(message="What to ask")
    async def ask(self, interaction: discord.Interaction, message: str) -> None:
        await interaction.response.defer(thinking=True)  # first, within Discord's 3 s
        key = user_key(interaction)
        async with self.chats.in_order(key):
            answer = await self.chats.say(key, message)
        await follow_up(interaction, answer.text)

    async def reset(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        key = user_key(interaction)
        async with self.chats.in_order(key):  # after the user's questions in flight
            answer = await self.chats.reset(key)
        await follow_up(interaction, answer.text)

    @app_commands.describe(name="The Knowledge Base topic, e.g. billing")
    async def topic(self, interaction: discord.Interaction, name: str) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        key = user_key(interaction)
        async with self.chats.in_order(key):
            answer = await self.chats.set_topic(key, name)
        await follow_up(interaction, answer.text)


def user_key(interaction: discord.Interaction) -> str:
    """The conversation's user key: one per Discord user."""
    return f"discord:{interaction.user.id}"


async def follow_up(interaction: discord.Interaction, text: str) -> None:
    """Answer a deferred command, in pieces if long."""
    for piece in chunks(text, MAX_MESSAGE):
        await interaction.followup.send(piece, allowed_mentions=NO_PINGS)


def main() -> None:
    guild = os.environ.get("DISCORD_GUILD_ID")
    bot = QuickchatBot(guild_id=int(guild) if guild else None)
    # Logs in (setup_hook), connects to the gateway, and on Ctrl-C calls close().
    bot.run(os.environ["DISCORD_BOT_TOKEN"], root_logger=True, log_level=logging.INFO)


if __name__ == "__main__":
    main()
