"""``quickchat-async demo``: a scripted tour of the SDK against the embedded emulator."""

from __future__ import annotations

import anyio
import rich.text

from quickchat_async import (
    AsyncQuickchat,
    Conversation,
    Reply,
    ScenarioNotFoundError,
    ValidationError,
)
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from ._output import guard, stdout


__all__ = ["demo"]


class _Demo:
    """The scripted tour: each step says what the SDK did, then shows it."""

    def __init__(self, emulator: Emulator, client: AsyncQuickchat) -> None:
        self.emulator = emulator
        self.client = client
        self.out = stdout()
        self.step = 0

    def title(self, text: str) -> None:
        self.step += 1
        self.out.print()
        self.out.print(f"[bold]{self.step}. {text}[/bold]")

    def you(self, text: str, note: str = "") -> None:
        line = rich.text.Text("  you>   ", style="bold cyan")
        line.append(text)
        if note:
            line.append(f"   ({note})", style="dim")
        self.out.print(line)

    def agent(self, reply: Reply, *, first_line: bool = False) -> None:
        text = reply.text.split("\n", 1)[0] if first_line else reply.text
        for number, part in enumerate(text.split("\n")):
            line = rich.text.Text("  agent> " if number == 0 else "         ", style="bold green")
            line.append(part)
            self.out.print(line)

    def note(self, text: str) -> None:
        self.out.print(rich.text.Text(f"  -> {text}", style="yellow"))

    async def run(self) -> None:
        self.out.print(
            "[bold]quickchat-async demo[/bold]: the SDK against the embedded emulator "
            "(in process: no network, no token)."
        )
        await self.conversation()
        await self.topics()
        await self.context()
        await self.retry()
        await self.errors()
        self.out.print()
        self.out.print(
            "Next: [bold]quickchat-async chat[/bold] to talk, [bold]quickchat-async say "
            '"Hi" --json[/bold] for scripts, [bold]quickchat-async emulator[/bold] to serve it.'
        )

    async def conversation(self) -> Conversation:
        self.title("A conversation keeps its conv_id")
        conv = self.client.conversation(kb_topic="billing")
        self.you("Hello!", "kb_topic=billing")
        first = await conv.say("Hello!")
        self.agent(first)
        self.note(f"conv_id {first.conv_id} captured; ord_number {first.ord_number}")
        self.you("Which payment methods do you accept?")
        second = await conv.say("Which payment methods do you accept?")
        self.agent(second)
        self.note(
            f"same conv_id {second.conv_id} sent back; ord_number {second.ord_number}. "
            "The server sent HTML:"
        )
        self.out.print(rich.text.Text(f"     {second.html!r}", style="dim"))
        self.note("reply.text turned <br> into a line break, dropped <b>, unescaped &amp;")
        return conv

    async def topics(self) -> None:
        self.title("kb_topic filters the Knowledge Base")
        question = "What is your return policy?"
        for topic in ("billing", "shipping"):
            conv = self.client.conversation(kb_topic=topic)
            self.you(question, f"kb_topic={topic}")
            self.agent(await conv.say(question), first_line=True)
        self.note("same question, two topics, two different articles")

    async def context(self) -> None:
        self.title("message_context travels with one message")
        conv = self.client.conversation()
        context = "The user's name is John."
        self.you("Hello", f"context={context!r}")
        reply = await conv.say("Hello", context=context, metadata={"userId": 12})
        self.agent(reply, first_line=True)
        sent = self.emulator.messages(reply.conv_id)[1]
        self.note(
            f"the server recorded message_context={sent.message_context!r} "
            f"client_metadata={dict(sent.client_metadata or {})!r}"
        )

    async def retry(self) -> None:
        self.title("A rate limit is retried")
        self.emulator.faults.script([Fault("rate_limit", retry_after="0")])
        self.you("How can I track my order?", "the emulator answers 429 first")
        reply = await self.client.say("How can I track my order?")
        self.agent(reply, first_line=True)
        by_status = self.emulator.stats().by_status
        self.note(
            f"the SDK got a 429 with Retry-After: 0, waited and retried: "
            f"{by_status.get(429, 0)} x 429 then a 200"
        )

    async def errors(self) -> None:
        self.title("Errors are typed exceptions")
        async with self.emulator.client(scenario_id="no-such-agent") as wrong:
            try:
                await wrong.say("Hello")
            except ScenarioNotFoundError as exc:
                self.note(f"{type(exc).__name__} (HTTP {exc.status_code}): {exc.server_message}")
        try:
            await self.client.say("Hi", client_metadata={f"key{i}": i for i in range(6)})
        except ValidationError as exc:
            self.note(f"{type(exc).__name__}, before sending: {exc.message}")


async def _demo() -> None:
    emulator = Emulator(seed=7)
    async with emulator.client() as client:
        await _Demo(emulator, client).run()


def demo() -> None:
    """Play a short scripted session against the embedded emulator (no token needed)."""
    with guard():
        anyio.run(_demo)
