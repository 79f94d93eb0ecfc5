"""Ask the AI Agent the same questions under several Knowledge Base topics at once, on trio.

One conversation per topic, all running concurrently in a nursery through one client; each
turn gets at most a few seconds (a trio cancel scope), and a failure in one conversation does
not stop the others. It shows how `kb_topic` changes the answers.

With no credentials set it talks to the bundled emulator, in process. Set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID to ask your own AI Agent, whose Knowledge Base
has its own tags:

    python examples/trio_bot.py billing shipping technical
"""

from __future__ import annotations

import os
import sys

import trio

from quickchat_async import AsyncQuickchat, QuickchatError
from quickchat_async.testing import Emulator


QUESTIONS = ("Hello!", "How do refunds work?", "How long does delivery take?")
#: The longest one turn may take here, retries included.
TURN_SECONDS = 10.0


def make_client() -> AsyncQuickchat:
    """Your AI Agent when QUICKCHAT_* credentials are set, else the emulator, in process."""
    if os.environ.get("QUICKCHAT_API_TOKEN") or os.environ.get("QUICKCHAT_API_KEY"):
        return AsyncQuickchat()
    print("(no QUICKCHAT_API_TOKEN set: talking to the bundled emulator)", file=sys.stderr)
    return Emulator().client()


async def ask(client: AsyncQuickchat, kb_topic: str, answers: dict[str, list[str]]) -> None:
    """Hold one conversation under `kb_topic`; collect its answers (or what went wrong)."""
    conv = client.conversation(kb_topic=kb_topic)
    got = answers[kb_topic] = []
    for question in QUESTIONS:
        with trio.move_on_after(TURN_SECONDS) as scope:
            try:
                reply = await conv.say(question)
            except QuickchatError as exc:
                got.append(f"{question} -> (error) {exc.message}")
                return
            got.append(f"{question} -> {reply.text.splitlines()[0]}")
        if scope.cancelled_caught:
            got.append(f"{question} -> (no reply within {TURN_SECONDS:g} s)")
            return


async def main(topics: list[str]) -> None:
    answers: dict[str, list[str]] = {}
    async with make_client() as client, trio.open_nursery() as nursery:
        for topic in topics:
            nursery.start_soon(ask, client, topic, answers)
    for topic in topics:
        print(f"[{topic}]")
        for line in answers[topic]:
            print(f"  {line}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1:] or ["billing", "shipping", "technical"])
