"""``quickchat-async chat``: a conversation in the terminal, with slash commands.

Lines are read in the main thread (so readline edits them and Ctrl-C reaches the prompt); the
turns run on an event loop in a blocking portal's thread.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import anyio.from_thread
import rich.markup
import rich.table
import rich.text

from quickchat_async import AsyncQuickchat, Conversation, QuickchatError, ValidationError

from ._connect import BaseURLOption, KBTopicOption, connect
from ._output import error_line, guard, stderr, stdout


__all__ = ["chat"]

_HELP: Final = (
    ("/topic [NAME|none]", "show or change the Knowledge Base topic"),
    ("/context TEXT", "send TEXT as message_context with your next message"),
    ("/history", "show this conversation's turns"),
    ("/save FILE", "save the conversation (a JSON snapshot)"),
    ("/load FILE", "continue a saved conversation"),
    ("/new", "start a new conversation"),
    ("/help", "show this help"),
    ("/quit", "leave (or Ctrl-D, Ctrl-C)"),
)


class _Repl:
    """The chat loop: reads lines in the main thread, runs turns on the portal's event loop.

    Each slash command returns whether the loop goes on.
    """

    def __init__(
        self,
        portal: anyio.from_thread.BlockingPortal,
        client: AsyncQuickchat,
        *,
        kb_topic: str | None,
        where: str,
    ) -> None:
        self._portal = portal
        self._client = client
        self._conv: Conversation = client.conversation(kb_topic=kb_topic)
        self._context: str | None = None
        self._where = where
        self._out = stdout()
        self._err = stderr()
        self._commands: Mapping[str, Callable[[str], bool]] = {
            "/topic": self._topic,
            "/context": self._set_context,
            "/history": self._history,
            "/save": self._save,
            "/load": self._load,
            "/new": self._new,
            "/help": self._help,
            "/quit": self._quit,
            "/exit": self._quit,
        }

    def run(self) -> None:
        self._out.print(
            f"Talking to {rich.markup.escape(self._where)}. Type a message, or /help for commands."
        )
        while True:
            try:
                line = self._out.input("[bold cyan]you>[/bold cyan] ").strip()
            except (EOFError, KeyboardInterrupt):
                self._out.print()
                return
            if line and not self._handle(line):
                return

    def _handle(self, line: str) -> bool:
        """Run a line: a slash command, or a message; return whether the loop goes on."""
        if not line.startswith("/"):
            self._turn(line)
            return True
        name, _, arg = line.partition(" ")
        command = self._commands.get(name.lower())
        if command is None:
            self._warn(f"Unknown command {name}; /help lists them.")
            return True
        return command(arg.strip())

    def _warn(self, message: str) -> None:
        self._err.print(rich.text.Text(message, style="yellow"))

    def _error(self, exc: BaseException) -> None:
        self._err.print(rich.text.Text(f"error: {error_line(exc)}", style="red"))

    def _turn(self, text: str) -> None:
        conv, started = self._conv, self._conv.conv_id is not None
        try:
            reply = self._portal.call(functools.partial(conv.say, text, context=self._context))
        except QuickchatError as exc:
            self._error(exc)
            return
        self._context = None
        line = rich.text.Text("agent> ", style="bold green")
        line.append(reply.text)
        self._out.print(line)
        if not started:
            self._out.print(rich.text.Text(f"(conversation {reply.conv_id})", style="dim"))

    def _topic(self, arg: str) -> bool:
        if not arg:
            topic = self._conv.kb_topic
            self._out.print(f"Topic: {rich.markup.escape(topic)}" if topic else "No topic.")
            return True
        value = None if arg.lower() == "none" else arg
        try:
            self._conv.kb_topic = value
        except ValidationError as exc:  # the conversation refuses it: start one that takes it
            self._warn(error_line(exc))
            self._conv = self._client.conversation(kb_topic=value)
            self._out.print(
                "Started a new conversation "
                + (f"on topic {rich.markup.escape(value)}." if value else "without a topic.")
            )
            return True
        self._out.print(
            f"Topic: {rich.markup.escape(value)}." if value else "No topic from now on."
        )
        return True

    def _set_context(self, arg: str) -> bool:
        self._context = arg or None
        self._out.print(
            "Context set for your next message." if arg else "No context for the next message."
        )
        return True

    def _history(self, _: str) -> bool:
        turns = self._conv.history
        if not turns:
            self._out.print("No turns yet.")
            return True
        table = rich.table.Table("#", "you", "agent", "topic", "status", show_lines=False)
        for number, turn in enumerate(turns, start=1):
            table.add_row(
                str(number),
                rich.text.Text(turn.text),
                rich.text.Text(turn.reply.text if turn.reply is not None else "-"),
                rich.text.Text(turn.kb_topic or "-"),
                turn.status.value,
            )
        self._out.print(table)
        self._out.print(rich.text.Text(f"conversation {self._conv.conv_id}", style="dim"))
        return True

    def _save(self, arg: str) -> bool:
        if not arg:
            self._warn("Usage: /save FILE")
            return True
        try:
            Path(arg).write_text(
                json.dumps(self._conv.snapshot(), indent=2, ensure_ascii=False) + "\n", "utf-8"
            )
        except OSError as exc:
            self._error(exc)
            return True
        self._out.print(rich.text.Text(f"Saved {len(self._conv.history)} turn(s) to {arg}."))
        return True

    def _load(self, arg: str) -> bool:
        if not arg:
            self._warn("Usage: /load FILE")
            return True
        try:
            snapshot: object = json.loads(Path(arg).read_text("utf-8"))
            if not isinstance(snapshot, dict):
                raise ValidationError(f"{arg} does not hold a conversation snapshot.")
            conv = self._client.resume(snapshot)  # pyright: ignore[reportUnknownArgumentType]
        except (OSError, ValueError) as exc:  # ValidationError and JSON errors are ValueErrors
            self._error(exc)
            return True
        self._conv = conv
        self._out.print(
            rich.text.Text(
                f"Loaded conversation {conv.conv_id} ({len(conv.history)} turn(s)) from {arg}."
            )
        )
        return True

    def _new(self, _: str) -> bool:
        self._conv = self._client.conversation(kb_topic=self._conv.kb_topic)
        self._out.print("New conversation.")
        return True

    def _help(self, _: str) -> bool:
        table = rich.table.Table(show_header=False, box=None, padding=(0, 2))
        for usage, what in _HELP:
            table.add_row(usage, what)
        self._out.print(table)
        return True

    def _quit(self, _: str) -> bool:
        return False


def _enable_line_editing() -> None:
    if sys.stdin.isatty():  # pragma: no cover -- a terminal only
        with contextlib.suppress(ImportError):
            import readline  # noqa: PLC0415 -- input() gains history and editing

            del readline


def chat(kb_topic: KBTopicOption = None, base_url: BaseURLOption = None) -> None:
    """Talk with the AI Agent; /help lists the slash commands."""
    with guard():
        _enable_line_editing()
        emulated: list[bool] = []
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                connect(base_url, lambda: emulated.append(True))
            ) as client,
        ):
            where = (
                "the embedded emulator (no QUICKCHAT_* variables set)"
                if emulated
                else f"{client.base_url} (scenario {client.scenario_id})"
            )
            _Repl(portal, client, kb_topic=kb_topic, where=where).run()
