"""The reliability suite's fixtures, its `scenario` marker, and the totals it prints.

Each test of one of the numbered scenarios of docs/reliability.md carries
`@pytest.mark.scenario(N)`. At the end of the session the suite prints its totals (scenarios
proven, bad inputs tried, duplicates found) and, when `QUICKCHAT_FAULTS_SUMMARY` names a file,
writes them there as JSON (`nox -s faults` reads it).

The scenarios talk to the emulator served on loopback (the `served` fixture of tests/conftest.py,
with the test credentials); `rule` checks what every scenario checks, on it.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Generator, Iterator

import pytest

from quickchat_async.testing import Emulator

from .rule import TALLY, Rule, check_log_records


#: The numbered scenarios of docs/reliability.md.
SCENARIOS = range(1, 31)
SUMMARY_ENV = "QUICKCHAT_FAULTS_SUMMARY"

_scenario_results: dict[int, list[bool]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario(number): proves the numbered scenario of docs/reliability.md"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is part of the reliability suite (`-m reliability` selects it)."""
    here = pathlib.Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Count a scenario as proven when every test marked with its number passed.

    A failure in setup or teardown (where the rule checks the descriptors) counts too.
    """
    report = yield
    if report.when == "call" or report.failed:
        for marker in item.iter_markers("scenario"):
            _scenario_results.setdefault(int(marker.args[0]), []).append(not report.failed)
    return report


def summary() -> dict[str, object]:
    """The suite's totals."""
    proven = sorted(n for n, results in _scenario_results.items() if results and all(results))
    return {
        "scenarios": len(SCENARIOS),
        "scenarios proven": len(proven),
        "scenarios missing": [n for n in SCENARIOS if n not in proven],
        "bad inputs tried": TALLY["bad inputs tried"],
        "duplicates found": TALLY["duplicates found"],
        "faults checked": TALLY["faults checked"],
        "errors checked": TALLY["errors checked"],
        "user messages checked": TALLY["user messages checked"],
        "fan-out turns": TALLY["fan-out turns"],
        "stateful steps": TALLY["stateful steps"],
        "turns reconciled": TALLY["turns reconciled"],
        "log records checked": TALLY["log records checked"],
    }


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _scenario_results and not TALLY:
        return
    totals = summary()
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write_line(
        f"{totals['scenarios proven']}/{totals['scenarios']} scenarios proven, "
        f"{totals['bad inputs tried']} bad inputs tried, "
        f"{totals['duplicates found']} duplicates found"
    )
    if path := os.environ.get(SUMMARY_ENV):
        pathlib.Path(path).write_text(json.dumps(totals, indent=2) + "\n", encoding="utf-8")


@pytest.fixture(name="rule")
async def _rule(served: Emulator) -> AsyncIterator[Rule]:
    """The rule every scenario checks; at the end, the record and the descriptors are checked."""
    rule = Rule(served)
    yield rule
    rule.check_record()
    await rule.check_fds()


#: Every logger the SDK's stack writes to; the root catches the rest.
DEBUG_LOGGERS = (
    "",
    "quickchat_async",
    "httpx2",
    "httpcore2",
    "httpx",
    "httpcore",
    "stamina",
    "uvicorn",
    "anyio",
)


@pytest.fixture(autouse=True)
def _secrets_canary(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here runs with DEBUG logging everywhere; no record may hold a credential.

    A record is checked whole: its message, its arguments and extra fields, and any exception
    it carries, formatted with every frame's locals.
    """
    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    check_log_records(caplog.get_records("setup") + caplog.get_records("call"))
