"""A chat bot whose users' conversations outlive the process, kept in SQLite.

Each line of stdin is a message from one of several users, `user: text`; the bot answers each
with the AI Agent's reply, `[user] reply`. Messages are handled concurrently, as a real bot
handles its users, and each user's turns still run one at a time, in order. Stop the bot and
start it again: every user's conversation goes on where it was.

`user: /forget` deletes that user's conversation; the next message starts a new one.

Configuration comes from the environment: QUICKCHAT_API_TOKEN (or QUICKCHAT_API_KEY for the
legacy flavor), QUICKCHAT_SCENARIO_ID, and QUICKCHAT_BASE_URL to talk to the local emulator
instead of Quickchat. The database file is the first argument (default: bot.db).

    printf 'alice: Hello!\\nbob: Hi there\\nalice: What can you do?\\n' | python store_bot.py
"""

from __future__ import annotations

import asyncio
import sys

from quickchat_async import AsyncQuickchat, QuickchatError, SQLiteStore


async def answer(client: AsyncQuickchat, store: SQLiteStore, user: str, text: str) -> None:
    """Handle one message: load the user's conversation, send, print the reply."""
    try:
        conv = await client.conversation_for(user, store=store)
        if text == "/forget":
            await conv.forget()
            print(f"[{user}] (conversation forgotten)", flush=True)
            return
        reply = await conv.say(text)
    except QuickchatError as exc:
        print(f"[{user}] error: {exc}", flush=True)
        return
    print(f"[{user}] {reply.text}", flush=True)


async def main(path: str) -> None:
    async with AsyncQuickchat() as client, SQLiteStore(path) as store:
        pending: set[asyncio.Task[None]] = set()
        while line := await asyncio.to_thread(sys.stdin.readline):
            user, separator, text = line.partition(":")
            if not separator or not user.strip() or not text.strip():
                print(f"ignored (expected 'user: message'): {line.strip()!r}", flush=True)
                continue
            task = asyncio.create_task(answer(client, store, user.strip(), text.strip()))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "bot.db"))
