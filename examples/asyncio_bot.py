"""A console chat bot on asyncio: each line of stdin is your message, the AI Agent answers.

With no credentials set it talks to the bundled emulator, in process, so it runs anywhere.
Set QUICKCHAT_API_TOKEN (or QUICKCHAT_API_KEY for the legacy flavor) and QUICKCHAT_SCENARIO_ID
to talk to your own AI Agent; QUICKCHAT_BASE_URL points it elsewhere (a served emulator).

    printf 'Hello!\\nHow do refunds work?\\n' | python examples/asyncio_bot.py billing

The optional argument is the Knowledge Base topic (kb_topic) of the conversation.
"""

from __future__ import annotations

import asyncio
import os
import sys

from quickchat_async import AsyncQuickchat, Conversation, QuickchatError, TurnStatus
from quickchat_async.testing import Emulator


def make_client() -> AsyncQuickchat:
    """Your AI Agent when QUICKCHAT_* credentials are set, else the emulator, in process."""
    if os.environ.get("QUICKCHAT_API_TOKEN") or os.environ.get("QUICKCHAT_API_KEY"):
        return AsyncQuickchat()
    print("(no QUICKCHAT_API_TOKEN set: talking to the bundled emulator)", file=sys.stderr)
    return Emulator().client()


async def chat(conv: Conversation, text: str) -> None:
    """Send one message and print the reply, or what went wrong."""
    try:
        reply = await conv.say(text)
    except QuickchatError as exc:
        if exc.outcome_unknown:  # it may have arrived: the next reply will tell
            print(f"bot: (no reply; the message may not have arrived) {exc.message}")
        else:
            print(f"bot: (error) {exc.message}")
        return
    print(f"bot: {reply.text}")


async def main(kb_topic: str | None) -> None:
    async with make_client() as client:
        conv = client.conversation(kb_topic=kb_topic)
        # Reading stdin blocks, so it happens in a thread; the event loop stays free.
        while line := await asyncio.to_thread(sys.stdin.readline):
            if text := line.strip():
                print(f"you: {text}")
                await chat(conv, text)
        confirmed = sum(turn.status is not TurnStatus.UNCONFIRMED for turn in conv.history)
        print(f"(conversation {conv.conv_id}: {confirmed} of {len(conv.history)} turns confirmed)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
