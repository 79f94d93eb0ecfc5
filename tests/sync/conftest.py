"""The blocking client's fixtures: the emulator in process and served, with canary credentials.

Every test here runs with DEBUG logging on every logger the blocking stack writes to, and no
record may hold a credential (`_secrets_canary`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quickchat_async.emulator import Scenario
from quickchat_async.testing import Emulator
from tests.conftest import library_frames_with_locals


#: Distinctive credentials: a leak anywhere is found by a plain substring search.
TOKEN = "tok-CANARY-blocking-4e1d0a"
API_KEY = "key-CANARY-blocking-7b2c93"
SECRETS = (TOKEN, API_KEY)
SCENARIO = Scenario("scn-blocking", tokens=(TOKEN,), api_keys=(API_KEY,))

#: Every logger the blocking stack writes to; the root catches the rest.
DEBUG_LOGGERS = ("", "quickchat_async", "httpx", "httpcore", "stamina", "uvicorn")


def assert_no_secret(text: str, where: str) -> None:
    """Neither canary credential appears in `text`."""
    for secret in SECRETS:
        assert secret not in text, f"a credential leaked into {where}"


def gevent_python(*args: str) -> list[str]:
    """The command that runs this interpreter with `args` in a process of its own under gevent.

    When the tests run under `coverage run` (`nox -s tests`), the process is measured too, with
    gevent's greenlets followed, and writes its data beside the suite's for `coverage combine`:
    the Locust user and the gevent transport run only in such processes.
    """
    if os.environ.get("COVERAGE_RUN") != "true":
        return [sys.executable, *args]
    rcfile = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return [
        sys.executable,
        "-m",
        "coverage",
        "run",
        "--parallel-mode",
        "--concurrency=gevent",
        f"--rcfile={rcfile}",
        *args,
    ]


def new_emulator(**options: object) -> Emulator:
    """An emulator that knows the canary credentials (and nothing else)."""
    return Emulator(scenarios=[SCENARIO], seed=3, **options)  # type: ignore[arg-type]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that talk to the served emulator use real sockets on 127.0.0.1 (`network`)."""
    for item in items:
        if "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope="module", name="server")
def _server() -> Iterator[Emulator]:
    """One emulator per module, served by uvicorn on 127.0.0.1 (its own thread and loop)."""
    with new_emulator() as emulator:
        yield emulator


@pytest.fixture(name="served")
def _served(server: Emulator) -> Iterator[Emulator]:
    """The module's served emulator, with no conversation, no fault and no latency."""
    server.reset()
    server.service.latency = 0.0
    yield server
    server.faults.clear()
    server.service.latency = 0.0


@pytest.fixture(
    params=["in process", pytest.param("served", marks=pytest.mark.network)], name="emulator"
)
def _emulator(request: pytest.FixtureRequest) -> Emulator:
    """The emulator in process (no socket), then served on loopback."""
    if request.param == "served":
        return request.getfixturevalue("served")  # type: ignore[no-any-return]
    return new_emulator()


@pytest.fixture(autouse=True)
def _secrets_canary(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log record holds a credential: message, arguments, extras, exception with locals."""
    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        where = f"the log record {record.name}:{record.lineno}"
        assert_no_secret(record.getMessage(), where)
        assert_no_secret(repr(vars(record)), where)
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_secret(library_frames_with_locals(record.exc_info[1]), where)
