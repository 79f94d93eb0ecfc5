"""The ``quickchat-async`` command: ``demo``, ``chat``, ``say`` and ``emulator``.

It needs the ``cli`` extra (typer and rich, plus the emulator's Starlette and uvicorn)::

    pip install "quickchat-async[cli]"
    quickchat-async demo                      # a scripted tour, against the embedded emulator
    quickchat-async chat                      # talk; /help lists the slash commands
    quickchat-async say "Hi" --json           # one turn, for scripts
    quickchat-async emulator --port 8765      # serve the emulator for other programs

``chat`` and ``say`` talk to Quickchat when ``QUICKCHAT_API_TOKEN`` (or ``QUICKCHAT_API_KEY``)
and ``QUICKCHAT_SCENARIO_ID`` are set, honouring ``QUICKCHAT_BASE_URL``; with none of the
``QUICKCHAT_*`` variables set (and no ``--base-url``), they start the embedded emulator in
process and say so.

Errors print one line on stderr and exit with status 1: no traceback, and never a token or
api_key. The command-line application is `app`, a `typer.Typer`; other modules may add
commands to it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from pathlib import Path
from types import FrameType
from typing import Annotated, Final, NoReturn


try:
    import rich.console
    import rich.markup
    import rich.table
    import rich.text
    import typer
except ImportError:  # the SDK alone: say what to install, in one line
    sys.stderr.write(
        "quickchat-async: the command line needs typer and rich: "
        'pip install "quickchat-async[cli]"\n'
    )
    raise SystemExit(1) from None

import anyio
import anyio.from_thread
import stamina.instrumentation

from ._cli_load import register as register_load
from ._client import AsyncQuickchat
from ._conversation import Conversation
from ._exceptions import QuickchatError, ScenarioNotFoundError, ValidationError
from ._models import Reply
from ._version import __version__
from .emulator import EmulatorService, FaultKind, KnowledgeBaseError, Scenario, load_kb
from .emulator import Fault as EmulatorFault
from .emulator._faults import FaultLike
from .testing import Emulator


__all__ = ["app", "main"]

#: Setting any of these (or passing --base-url) means "talk to a configured service".
CONFIG_VARS: Final = (
    "QUICKCHAT_API_TOKEN",
    "QUICKCHAT_API_KEY",
    "QUICKCHAT_SCENARIO_ID",
    "QUICKCHAT_BASE_URL",
)
_SECRET_VARS: Final = ("QUICKCHAT_API_TOKEN", "QUICKCHAT_API_KEY")
_EMULATOR_NOTE: Final = (
    "No QUICKCHAT_* variables set: talking to the embedded emulator (scenario 'demo'), "
    "not to Quickchat."
)

app = typer.Typer(
    name="quickchat-async",
    help="Talk to a Quickchat AI Agent, or to the embedded emulator when nothing is configured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # never a traceback, never locals that may hold a token
    rich_markup_mode=None,  # usage errors in click's plain lines, not in a box
)


# --- output and errors ---------------------------------------------------------------------


def _out() -> rich.console.Console:
    return rich.console.Console(highlight=False, soft_wrap=True)


def _err() -> rich.console.Console:
    return rich.console.Console(stderr=True, highlight=False, soft_wrap=True)


def _scrub(message: str) -> str:
    """Hide any configured credential in a message (the SDK's own messages never hold one)."""
    for name in _SECRET_VARS:
        secret = os.environ.get(name, "").strip()
        if len(secret) >= 4:  # noqa: PLR2004 -- too short to be a real credential
            message = message.replace(secret, "<redacted>")
    return message


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _error_line(exc: BaseException) -> str:
    """What the user reads about an error: one line, its type when it is the SDK's."""
    if isinstance(exc, QuickchatError):
        text = f"{type(exc).__name__}: {exc.message}"
    elif isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    elif isinstance(exc, (KnowledgeBaseError, ValueError)):
        text = str(exc)
    else:
        text = f"unexpected {type(exc).__name__}: {exc}"
    return _one_line(_scrub(text))


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {_one_line(_scrub(message))}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _guard() -> Generator[None]:
    """Turn any error into one line on stderr and exit status 1."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 -- the one place that reports every failure
        _fail(_error_line(exc))


def _configure_logging(*, verbose: bool) -> None:
    """Quiet by default: stamina's retry warnings are not for a command line's users.

    With --verbose the SDK's own INFO lines (retries included) and the server's go to stderr.
    """
    stamina.instrumentation.set_on_retry_hooks([])
    if verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
        )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quickchat-async {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log retries and server events on stderr."),
    ] = False,
    version: Annotated[  # noqa: ARG001 -- handled by its callback
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Talk to a Quickchat AI Agent, or to the embedded emulator when nothing is configured."""
    _configure_logging(verbose=verbose)


# --- clients -------------------------------------------------------------------------------


def _configured(base_url: str | None) -> bool:
    return base_url is not None or any(os.environ.get(name) for name in CONFIG_VARS)


@contextlib.asynccontextmanager
async def _client(
    base_url: str | None, on_emulator: Callable[[], None]
) -> AsyncGenerator[AsyncQuickchat]:
    """A client from the QUICKCHAT_* variables, or one wired to an in-process emulator."""
    if _configured(base_url):
        async with AsyncQuickchat(base_url=base_url) as client:
            yield client
    else:
        on_emulator()
        async with Emulator().client() as client:
            yield client


def _announce_emulator() -> None:
    _err().print(f"[dim]{_EMULATOR_NOTE}[/dim]")


BaseURLOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="Where the Chat endpoint lives (default: QUICKCHAT_BASE_URL, else Quickchat's).",
        show_default=False,
    ),
]
KBTopicOption = Annotated[
    str | None,
    typer.Option("--kb-topic", help="Filter the Knowledge Base on this topic.", show_default=False),
]


# --- say -----------------------------------------------------------------------------------


def _reply_json(reply: Reply) -> dict[str, object]:
    return {
        "text": reply.text,
        "html": reply.html,
        "conv_id": reply.conv_id,
        "ord_number": reply.ord_number,
        "src": reply.src,
    }


async def _say_once(
    text: str,
    *,
    conv_id: str | None,
    kb_topic: str | None,
    context: str | None,
    base_url: str | None,
) -> Reply:
    async with _client(base_url, _announce_emulator) as client:
        metadata = {"kb_topic": kb_topic} if kb_topic is not None else None
        return await client.say(
            text, conv_id=conv_id, client_metadata=metadata, message_context=context
        )


@app.command()
def say(  # noqa: PLR0917 -- typer passes keywords
    text: Annotated[str, typer.Argument(help="Your message.", show_default=False)],
    conv_id: Annotated[
        str | None,
        typer.Option("--conv-id", help="Continue this conversation.", show_default=False),
    ] = None,
    kb_topic: KBTopicOption = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context", help="message_context: extra context for the AI.", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reply as JSON on stdout.")
    ] = False,
    base_url: BaseURLOption = None,
) -> None:
    """Send one message and print the reply (for scripts; the conv_id goes to stderr)."""
    with _guard():
        reply = anyio.run(
            functools.partial(
                _say_once,
                text,
                conv_id=conv_id,
                kb_topic=kb_topic,
                context=context,
                base_url=base_url,
            )
        )
    if as_json:
        typer.echo(json.dumps(_reply_json(reply), ensure_ascii=False))
        return
    typer.echo(reply.text)
    _err().print(f"[dim]conv_id {rich.markup.escape(reply.conv_id)}[/dim]")


# --- chat ----------------------------------------------------------------------------------

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
    """The chat loop: reads lines in the main thread, runs turns on the portal's event loop."""

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
        self._out = _out()
        self._err = _err()
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
            if not line:
                continue
            if line.startswith("/"):
                name, _, arg = line.partition(" ")
                command = self._commands.get(name.lower())
                if command is None:
                    self._warn(f"Unknown command {name}; /help lists them.")
                elif not command(arg.strip()):
                    return
                continue
            self._turn(line)

    def _warn(self, message: str) -> None:
        self._err.print(rich.text.Text(message, style="yellow"))

    def _error(self, exc: BaseException) -> None:
        self._err.print(rich.text.Text(f"error: {_error_line(exc)}", style="red"))

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
        conv = self._conv
        if not arg:
            topic = conv.kb_topic
            self._out.print(f"Topic: {rich.markup.escape(topic)}" if topic else "No topic.")
            return True
        value = None if arg.lower() == "none" else arg
        if conv.conv_id is not None and (value is None) != (conv.kb_topic is None):
            # Quickchat filters only if every request of a conversation carries kb_topic.
            self._conv = self._client.conversation(kb_topic=value)
            self._out.print(
                "A started conversation cannot gain or lose its topic; started a new one "
                + (f"on topic {rich.markup.escape(value)}." if value else "without a topic.")
            )
            return True
        conv.kb_topic = value  # a new value for the same conversation: always allowed
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


@app.command()
def chat(
    kb_topic: KBTopicOption = None,
    base_url: BaseURLOption = None,
) -> None:
    """Talk with the AI Agent; /help lists the slash commands."""
    with _guard():
        _enable_line_editing()
        emulated: list[bool] = []
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                _client(base_url, lambda: emulated.append(True))
            ) as client,
        ):
            where = (
                "the embedded emulator (no QUICKCHAT_* variables set)"
                if emulated
                else f"{client.base_url} (scenario {client.scenario_id})"
            )
            _Repl(portal, client, kb_topic=kb_topic, where=where).run()


# --- emulator ------------------------------------------------------------------------------


class LogLevel(str, enum.Enum):
    """How much the served emulator logs on stderr."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


def _fault_rates(specs: list[str]) -> dict[FaultKind, float]:
    rates: dict[FaultKind, float] = {}
    for spec in specs:
        name, sep, rate = spec.partition("=")
        if not sep:
            raise typer.BadParameter(f"{spec!r} is not KIND=RATE (such as rate_limit=0.1).")
        try:
            kind = FaultKind.parse(name.strip())
            rates[kind] = float(rate)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return rates


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Generator[None]:
    """Set `stop` on SIGINT or SIGTERM while serving; restore the handlers afterwards."""

    def handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@app.command("emulator")
def emulator_command(  # noqa: PLR0917 -- one option per setting; typer passes keywords
    host: Annotated[str, typer.Option(help="Address to listen on (loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8765,
    token: Annotated[str, typer.Option(help="Bearer token clients use.")] = "demo-token",  # noqa: S107 -- the emulator's public demo token
    scenario_id: Annotated[str, typer.Option(help="The AI Agent's ID.")] = "demo",
    api_key: Annotated[str, typer.Option(help="api_key for the legacy flavor.")] = "demo-key",
    kb: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file of articles replacing the bundled ones.", show_default=False
        ),
    ] = None,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Milliseconds added before every reply.")
    ] = 0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Inject a fault at a rate, as KIND=RATE (rate_limit=0.1); repeatable.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Make conv_ids and fault draws reproducible.", show_default=False),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(help="Allow a non-loopback --host (the emulator has no real security)."),
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(help="What the server logs.")] = LogLevel.INFO,
) -> None:
    """Serve the Quickchat emulator over HTTP until Ctrl-C or SIGTERM."""
    rates = _fault_rates(fault or [])
    with _guard():
        from .emulator import serve  # noqa: PLC0415 -- needs uvicorn, only here

        fault_rates: dict[FaultLike, float] = dict(rates.items())
        options: dict[str, object] = {}
        if kb is not None:
            options["knowledge_base"] = load_kb(kb)
        service = EmulatorService(
            scenarios=[Scenario(scenario_id, tokens=[token], api_keys=[api_key])],
            latency=latency_ms / 1000,
            fault_rates=fault_rates,
            seed=seed,
            **options,  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        )
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(levelname)s: %(message)s")
        stop = threading.Event()
        with _stop_on_signals(stop):
            handle = serve(
                service,
                host=host,
                port=port,
                allow_remote=allow_remote,
                log_level=log_level.value,
            )
            try:
                _print_serving(handle.base_url, scenario_id, token, api_key, rates)
                while handle.running and not stop.is_set():
                    stop.wait(0.25)
            finally:
                handle.stop()
        if not stop.is_set():
            _fail("The emulator server stopped unexpectedly.")
        typer.echo("Emulator stopped.", err=True)


def _print_serving(
    base_url: str, scenario_id: str, token: str, api_key: str, rates: Mapping[FaultKind, float]
) -> None:
    lines = [
        f"Quickchat emulator serving at {base_url} (POST {base_url}/chat)",
        f"  scenario_id  {scenario_id}",
        f"  token        {token}   (Authorization: Bearer, current flavor)",
        f"  api_key      {api_key}   (in the body, legacy flavor)",
    ]
    if rates:
        listed = ", ".join(f"{kind.value}={rate:g}" for kind, rate in rates.items())
        lines.append(f"  faults       {listed}")
    lines += [
        "Try it:",
        (
            f"  export QUICKCHAT_BASE_URL={base_url} QUICKCHAT_API_TOKEN={token} "
            f"QUICKCHAT_SCENARIO_ID={scenario_id}"
        ),
        "  quickchat-async chat",
        "Ctrl-C to stop.",
    ]
    typer.echo("\n".join(lines))
    sys.stdout.flush()


# --- demo ----------------------------------------------------------------------------------


class _Demo:
    """The scripted tour: each step says what the SDK did, then shows it."""

    def __init__(self, emulator: Emulator, client: AsyncQuickchat) -> None:
        self.emulator = emulator
        self.client = client
        self.out = _out()
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
        self.emulator.faults.script([EmulatorFault("rate_limit", retry_after="0")])
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


@app.command()
def demo() -> None:
    """Play a short scripted session against the embedded emulator (no token needed)."""
    with _guard():
        anyio.run(_demo)


register_load(app)


def main() -> None:
    """Run the ``quickchat-async`` command."""
    app(prog_name="quickchat-async")
