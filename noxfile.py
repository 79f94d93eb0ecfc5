"""The one entry point for tests, lint, types, docs and benchmarks: `nox -s <session>`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nox


nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests", "docs"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install(session: nox.Session, *groups: str, package: bool = True) -> None:
    """Install the package (editable, with every extra) and the named dependency groups."""
    requirements = nox.project.dependency_groups(PYPROJECT, *groups)
    session.install(*(["-e", ".[all]"] if package else []), *requirements)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio and trio with branch coverage (>= 95%), the bots included."""
    install(session, "tests", "examples")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report", "--fail-under=95")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    install(session, "lint", package=False)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy strict and pyright strict on the package and on tests/typing (the public types)."""
    install(session, "typing")
    session.run("mypy", "quickchat_async", "tests/typing")
    session.run("pyright", "quickchat_async", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, warnings as errors."""
    install(session, "docs")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Fan-out benchmark against nginx on 127.0.0.1 (installed with apt-get if absent and root).

    The SDK beside raw httpx2, httpx and aiohttp, and openai's and anthropic's SDKs (the `bench`
    dependency group); then the blocking client beside raw httpx2.Client, and QuickchatUser
    beside Locust's FastHttpUser (`bench_sync.py`). Not a default session: it takes about five
    minutes and prints ratios and targets, never fails on speed. `nox -s bench -- --quick` is
    a smoke run of seconds.
    """
    install(session, "bench")
    if not any(Path(d, "nginx").exists() for d in ("/usr/sbin", "/usr/bin", "/sbin")):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            session.run("apt-get", "update", "-q", external=True)
            session.run("apt-get", "install", "-y", "-q", "nginx-light", external=True)
        else:
            session.warn("nginx not found: the benchmark starts its own fallback server")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    quick = ["--quick"] if "--quick" in session.posargs else []
    session.run("python", "benchmarks/bench_sync.py", *quick)


@nox.session
def faults(session: nox.Session) -> None:
    """The reliability suite (faults, cancellation, fuzzing, secrets), then its totals.

    `QUICKCHAT_FUZZ_EXAMPLES=20 nox -s faults` searches 20 times more examples, at random.
    """
    install(session, "tests")
    summary = Path(session.create_tmp()) / "faults-summary.json"
    summary.unlink(missing_ok=True)
    session.run(
        "pytest",
        "tests/reliability",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"QUICKCHAT_FAULTS_SUMMARY": str(summary)},
    )
    totals = json.loads(summary.read_text(encoding="utf-8"))
    for name, value in totals.items():
        session.log(f"{name:>22}: {value}")
    if totals["scenarios missing"] or totals["duplicates found"]:
        session.error("Not every scenario is proven, or a message was duplicated.")
