"""What every command prints the same way: consoles, one-line errors, exit statuses, logging.

An error is one line on stderr, ``error: ...``, and the command exits with status 1 (Ctrl-C
during a turn: 130). No traceback, and never a credential: the SDK's messages hold none, and
the values of ``QUICKCHAT_API_TOKEN`` and ``QUICKCHAT_API_KEY`` are redacted from any other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Generator
from typing import Final, NoReturn

import rich.console
import stamina.instrumentation
import typer

from quickchat_async import QuickchatError


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "configure_logging",
    "error_line",
    "fail",
    "guard",
    "stderr",
    "stdout",
]

EXIT_ERROR: Final = 1
EXIT_INTERRUPTED: Final = 130
_SECRET_VARS: Final = ("QUICKCHAT_API_TOKEN", "QUICKCHAT_API_KEY")
_SHORTEST_SECRET: Final = 4  # shorter values are no real credential, and would redact words


def stdout() -> rich.console.Console:
    """A console on stdout, with no colour guessing in the text."""
    return rich.console.Console(highlight=False, soft_wrap=True)


def stderr() -> rich.console.Console:
    """A console on stderr, for notes and errors."""
    return rich.console.Console(stderr=True, highlight=False, soft_wrap=True)


def _scrub(message: str) -> str:
    """Hide any configured credential in a message."""
    for name in _SECRET_VARS:
        secret = os.environ.get(name, "").strip()
        if len(secret) >= _SHORTEST_SECRET:
            message = message.replace(secret, "<redacted>")
    return message


def _one_line(message: str) -> str:
    return " ".join(_scrub(message).split())


def error_line(exc: BaseException) -> str:
    """What the user reads about an error: one line, with its type when it is the SDK's."""
    if isinstance(exc, QuickchatError):
        text = f"{type(exc).__name__}: {exc.message}"
    elif isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    elif isinstance(exc, ValueError):  # a bad file or option, as the message says
        text = str(exc)
    else:
        text = f"unexpected {type(exc).__name__}: {exc}"
    return _one_line(text)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on one line and exit with `code`."""
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def guard() -> Generator[None]:
    """Turn any error into one line on stderr and exit status 1 (130 for Ctrl-C)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 -- the one place that reports every failure
        fail(error_line(exc))


def configure_logging(*, verbose: bool) -> None:
    """Quiet by default: stamina's retry warnings are not for a command line's users.

    With `verbose`, the SDK's own INFO lines (retries included) and the server's go to stderr.
    """
    stamina.instrumentation.set_on_retry_hooks([])
    if verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
        )
