"""Fixtures for the command line: global state the CLI sets is put back, a served emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import stamina.instrumentation
from typer.testing import CliRunner

from quickchat_async.emulator import EmulatorService, ServerHandle, serve


#: A credential that must never appear in anything the CLI prints.
CANARY = "tok-CANARY-cli-5e1d77"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI quiets stamina's hooks and may configure logging: undo both after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    stamina.instrumentation.set_on_retry_hooks(None)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def served() -> Iterator[ServerHandle]:
    """The emulator (scenario demo, token demo-token) served by uvicorn on 127.0.0.1."""
    with serve(EmulatorService(seed=1)) as handle:
        yield handle
