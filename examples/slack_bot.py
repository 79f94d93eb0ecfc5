"""A Slack app that answers with your AI Agent (Bolt for Python: AsyncApp, HTTP mode).

Mention the app in a channel and it answers in a thread; every Slack thread keeps one Quickchat
conversation, stored in SQLite, and replies in that thread continue it (with or without a
mention). While a message is being answered, it wears an hourglass reaction: Slack has no
typing indicator for apps in channels. "@app /reset" starts a new conversation (mention the app
again to begin it); "@app /topic <name>" one on a Knowledge Base topic.

The Slack app needs the bot scopes app_mentions:read, chat:write, reactions:write and
channels:history, and the bot events app_mention and message.channels, sent to
http://<your host>:3000/slack/events. Then:

    SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=... python examples/slack_bot.py

With no QUICKCHAT_API_TOKEN set it answers from the bundled emulator; set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID for your AI Agent. BOT_DB names the SQLite
file (slack_bot.db), HOST and PORT where to listen (127.0.0.1:3000: put a reverse proxy or a
tunnel with HTTPS in front), SLACK_API_URL another Web API base URL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from botkit import HELP, Chats, chunks, make_client
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from quickchat_async import AsyncQuickchat, ConversationStore, SQLiteStore


logger = logging.getLogger("slack_bot")

CHATS = web.AppKey("chats", Chats)
#: The reaction a message wears while it is being answered.
WORKING = "hourglass_flowing_sand"
#: Slack's advice for the longest message text, in characters.
MAX_MESSAGE = 4000
#: How many event IDs to remember, to answer each event once when Slack sends it again.
SEEN_EVENTS = 1000


def make_store() -> ConversationStore:
    """The app's conversations, in a SQLite file that outlives the process."""
    return SQLiteStore(os.environ.get("BOT_DB", "slack_bot.db"))


def create_app(
    make_client: Callable[[], AsyncQuickchat] = make_client,
    make_store: Callable[[], ConversationStore] = make_store,
    *,
    token: str | None = None,
    signing_secret: str | None = None,
    api_url: str | None = None,
) -> web.Application:
    """The Bolt app on its aiohttp server; the Quickchat client and store live with the server."""
    bolt = AsyncApp(
        client=AsyncWebClient(token=token, base_url=api_url or AsyncWebClient.BASE_URL),
        signing_secret=signing_secret,
    )
    server = bolt.web_app(path="/slack/events")

    async def start(server: web.Application) -> None:
        server[CHATS] = Chats(make_client(), make_store())

    async def stop(server: web.Application) -> None:
        await server[CHATS].aclose()  # once the messages in flight are answered

    server.on_startup.append(start)
    server.on_cleanup.append(stop)
    seen = SeenEvents()

    # Bolt acknowledges an Events API request (HTTP 200) before it runs the listener: Slack has
    # its answer at once, within its 3 s, and the listener answers the user when the AI Agent
    # has replied, however long that takes.
    @bolt.event("app_mention")
    async def mentioned(
        body: dict[str, Any],
        event: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        if seen.first_time(body):
            await answer(server[CHATS], client, context.bot_user_id, body, event)

    @bolt.event("message")
    async def message(
        body: dict[str, Any],
        event: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        if not is_plain_reply(event, context.bot_user_id) or not seen.first_time(body):
            return
        chats = server[CHATS]
        if await chats.knows(thread_key(body, event)):  # a thread the app is talking in
            await answer(chats, client, context.bot_user_id, body, event)

    return server


class SeenEvents:
    """The IDs of the last events, to answer each once though Slack resends a late-acked one."""

    def __init__(self, size: int = SEEN_EVENTS) -> None:
        self._size = size
        self._ids: dict[str, None] = {}  # a set that remembers its order

    def first_time(self, body: dict[str, Any]) -> bool:
        """Whether the event in `body` is new."""
        event_id = body.get("event_id")
        if event_id is None:
            return True
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            del self._ids[next(iter(self._ids))]
        return True


def is_plain_reply(event: dict[str, Any], bot_user_id: str | None) -> bool:
    """A person's message in a thread that does not mention the app (app_mention has those)."""
    return (
        "thread_ts" in event
        and not event.get("subtype")  # edits, deletions, joins...
        and "bot_id" not in event  # other apps, this one included
        and f"<@{bot_user_id}>" not in event.get("text", "")
    )


def thread_key(body: dict[str, Any], event: dict[str, Any]) -> str:
    """The conversation's user key: one per Slack thread."""
    thread = event.get("thread_ts") or event["ts"]
    return f"slack:{body['team_id']}:{event['channel']}:{thread}"


async def answer(
    chats: Chats,
    client: AsyncWebClient,
    bot_user_id: str | None,
    body: dict[str, Any],
    event: dict[str, Any],
) -> None:
    """Answer the event's message in its thread, wearing the hourglass while the Agent thinks."""
    key = thread_key(body, event)
    channel, ts = event["channel"], event["ts"]
    text = event.get("text", "").replace(f"<@{bot_user_id}>", "").strip()
    async with chats.in_order(key):
        await react(client.reactions_add, channel, ts)
        try:
            reply = (await chats.answer(key, text)).text if text else HELP
            for piece in chunks(escape(reply), MAX_MESSAGE):
                await client.chat_postMessage(
                    channel=channel, thread_ts=event.get("thread_ts") or ts, text=piece
                )
        finally:
            await react(client.reactions_remove, channel, ts)


async def react(method: Callable[..., Any], channel: str, ts: str) -> None:
    """Add or remove the hourglass; a missing reactions:write scope only costs the hourglass."""
    try:
        await method(channel=channel, timestamp=ts, name=WORKING)
    except SlackApiError as exc:
        logger.warning("reaction %s failed: %s", WORKING, exc.response.get("error"))


def escape(text: str) -> str:
    """The Agent's text as Slack shows it literally: no <!channel> pings, no broken links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    app = create_app(
        token=os.environ["SLACK_BOT_TOKEN"],
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        api_url=os.environ.get("SLACK_API_URL"),
    )
    # Serves until Ctrl-C or SIGTERM, then runs the clean-up hooks.
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000"))
    web.run_app(app, host=host, port=port)


if __name__ == "__main__":
    main()
