"""Whom ``chat`` and ``say`` talk to: the service ``QUICKCHAT_*`` names, or the embedded emulator.

Setting any ``QUICKCHAT_*`` variable (or passing ``--base-url``) means "talk to a configured
service", and the SDK reads and checks the variables; with none, the emulator runs in process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Final

import typer

from quickchat_async import AsyncQuickchat
from quickchat_async.testing import Emulator

from ._output import stderr


__all__ = ["BaseURLOption", "KBTopicOption", "announce_emulator", "connect"]

_CONFIG_VARS: Final = (
    "QUICKCHAT_API_TOKEN",
    "QUICKCHAT_API_KEY",
    "QUICKCHAT_SCENARIO_ID",
    "QUICKCHAT_BASE_URL",
)
_EMULATOR_NOTE: Final = (
    "No QUICKCHAT_* variables set: talking to the embedded emulator (scenario 'demo'), "
    "not to Quickchat."
)

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


def _configured(base_url: str | None) -> bool:
    return base_url is not None or any(os.environ.get(name) for name in _CONFIG_VARS)


@contextlib.asynccontextmanager
async def connect(
    base_url: str | None, on_emulator: Callable[[], object]
) -> AsyncGenerator[AsyncQuickchat]:
    """A client from the ``QUICKCHAT_*`` variables, or one wired to an in-process emulator.

    Args:
        base_url: ``--base-url``; None leaves it to ``QUICKCHAT_BASE_URL``.
        on_emulator: called before the emulator is used, to say so.
    """
    if _configured(base_url):
        async with AsyncQuickchat(base_url=base_url) as client:
            yield client
    else:
        on_emulator()
        async with Emulator().client() as client:
            yield client


def announce_emulator() -> None:
    """Say on stderr that the embedded emulator answers, not Quickchat."""
    stderr().print(f"[dim]{_EMULATOR_NOTE}[/dim]")
