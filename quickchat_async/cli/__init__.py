"""The ``quickchat-async`` command: ``demo``, ``chat``, ``say``, ``emulator`` and ``load``.

It needs the ``cli`` extra (typer and rich, plus the emulator's Starlette and uvicorn)::

    pip install "quickchat-async[cli]"
    quickchat-async demo                      # a scripted tour, against the embedded emulator
    quickchat-async chat                      # talk; /help lists the slash commands
    quickchat-async say "Hi" --json           # one turn, for scripts
    quickchat-async emulator --port 8765      # serve the emulator for other programs
    quickchat-async load -n 100 -m 3          # a load run, against the emulator on loopback

``chat`` and ``say`` talk to Quickchat when ``QUICKCHAT_API_TOKEN`` (or ``QUICKCHAT_API_KEY``)
and ``QUICKCHAT_SCENARIO_ID`` are set, honouring ``QUICKCHAT_BASE_URL``; with none of the
``QUICKCHAT_*`` variables set (and no ``--base-url``), they start the embedded emulator in
process and say so.

Errors print one line on stderr and exit with status 1: no traceback, and never a token or
api_key. Each command is a module of this package; the command-line application is `app`, a
`typer.Typer`, to which other modules may add commands.
"""

from __future__ import annotations

import sys
from typing import Annotated


try:
    import rich.console  # noqa: F401  # pyright: ignore[reportUnusedImport] -- the extra's check
    import typer
except ImportError:  # the SDK alone: say what to install, in one line
    sys.stderr.write(
        "quickchat-async: the command line needs typer and rich: "
        'pip install "quickchat-async[cli]"\n'
    )
    raise SystemExit(1) from None

from quickchat_async import __version__

from . import chat, demo, emulator, load, say
from ._output import configure_logging


__all__ = ["app", "main"]

app = typer.Typer(
    name="quickchat-async",
    help="Talk to a Quickchat AI Agent, or to the embedded emulator when nothing is configured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # never a traceback, never locals that may hold a token
    rich_markup_mode=None,  # usage errors in click's plain lines, not in a box
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
    configure_logging(verbose=verbose)


app.command()(say.say)
app.command()(chat.chat)
app.command()(emulator.emulator)
app.command()(demo.demo)
app.command()(load.load)


def main() -> None:
    """Run the ``quickchat-async`` command."""
    app(prog_name="quickchat-async")
