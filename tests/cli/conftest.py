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


def one_error_line(stderr: str) -> str:
    """The single `error:` line of a failed command; there is no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def configure(monkeypatch: pytest.MonkeyPatch, base_url: str, token: str = "demo-token") -> None:  # noqa: S107
    """Point the QUICKCHAT_* variables at `base_url`, scenario demo, with `token`."""
    monkeypatch.setenv("QUICKCHAT_API_TOKEN", token)
    monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "demo")
    monkeypatch.setenv("QUICKCHAT_BASE_URL", base_url)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI quiets stamina's hooks and may configure logging: undo both after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    stamina.instrumentation.set_on_retry_hooks(None)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(name="served")
def _served() -> Iterator[ServerHandle]:
    """The emulator (scenario demo, token demo-token) served by uvicorn on 127.0.0.1."""
    with serve(EmulatorService(seed=1)) as handle:
        yield handle
