"""``quickchat-async load``: a bounded load run with a progress bar and a summary."""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._loadrun import MAX_CONVERSATIONS, MAX_TURNS, LoadPlan, LoadReport, run_load
from ._output import EXIT_ERROR, guard


__all__ = ["load"]


class TransportChoice(str, enum.Enum):
    """The HTTP engines the load command can use."""

    HTTPX2 = "httpx2"
    HTTPX = "httpx"
    AIOHTTP = "aiohttp"


class BackendChoice(str, enum.Enum):
    """The event loops the load command can run on."""

    ASYNCIO = "asyncio"
    TRIO = "trio"


def _summary(report: LoadReport) -> Table:
    table = Table(title="Load run", show_header=False)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    latency = report.as_dict()["latency_ms"]
    rows = [
        ("transport", report.transport),
        ("conversations x turns", f"{report.conversations} x {report.turns_per_conversation}"),
        ("concurrency", str(report.concurrency)),
        ("turns ok / failed", f"{report.turns_ok} / {report.turns_failed}"),
        ("elapsed", f"{report.elapsed:.2f} s"),
        ("turns/s", f"{report.turns_per_second:.1f}"),
        *(
            (f"latency {name}", "-" if latency[name] is None else f"{latency[name]:.2f} ms")
            for name in ("p50", "p90", "p99", "max")
        ),
        ("retries", str(report.retries)),
    ]
    rows.extend((f"errors: {name}", str(count)) for name, count in report.errors.items())
    if report.timed_out:
        rows.append(("stopped", "at --max-duration"))
    for row in rows:
        table.add_row(*row)
    return table


def _run(plan: LoadPlan, backend: BackendChoice, *, as_json: bool) -> LoadReport:
    """Run `plan` on `backend` behind a progress bar on stderr (hidden for --json off a tty)."""
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]load"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
        disable=not err.is_terminal and as_json,
    ) as progress:
        task = progress.add_task("conversations", total=plan.conversations)
        run = functools.partial(run_load, plan, on_result=lambda _: progress.advance(task))
        return anyio.run(run, backend=backend.value)


def _finish(report: LoadReport, *, as_json: bool) -> None:
    """Print the summary; exit with 1 when no turn succeeded."""
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        Console().print(_summary(report))
    if report.turns_ok == 0:
        raise typer.Exit(EXIT_ERROR)


#: The options of `load`, one alias each, so that the command reads as a list of them.
Conversations = Annotated[
    int, typer.Option("--conversations", "-n", min=1, max=MAX_CONVERSATIONS, help="Conversations.")
]
Turns = Annotated[
    int, typer.Option("--turns", "-m", min=1, max=MAX_TURNS, help="Turns per conversation.")
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Conversations at once.")
]
Rate = Annotated[float | None, typer.Option(min=0.001, help="At most this many requests a second.")]
RatePerMinute = Annotated[
    float | None, typer.Option(min=0.001, help="At most this many requests a minute.")
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        envvar="QUICKCHAT_RATE_REDIS_URL",
        help="Count --rate and --rate-per-minute in this Redis, shared with every process "
        "using the same --rate-key (whole numbers; asyncio).",
    ),
]
RateKey = Annotated[str, typer.Option(help="The Redis key the rates are counted under.")]
Transport = Annotated[TransportChoice, typer.Option(help="HTTP engine (aiohttp: asyncio only).")]
Backend = Annotated[BackendChoice, typer.Option(help="Event loop.")]
BaseUrl = Annotated[
    str | None, typer.Option(help="Load this endpoint instead of the emulator on loopback.")
]
ScenarioId = Annotated[
    str | None, typer.Option(envvar="QUICKCHAT_SCENARIO_ID", help="With --base-url.")
]
Seconds = Annotated[float, typer.Option(min=0.001, help="Seconds per attempt.")]
MaxDuration = Annotated[
    float, typer.Option(min=0.001, max=3600, help="Stop the run after this many seconds.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def load(  # noqa: PLR0917 -- typer passes one parameter per option
    conversations: Conversations = 100,
    turns: Turns = 3,
    concurrency: Concurrency = 32,
    rate: Rate = None,
    rate_per_minute: RatePerMinute = None,
    redis_url: RedisUrl = None,
    rate_key: RateKey = "quickchat-async:rate",
    transport: Transport = TransportChoice.HTTPX2,
    backend: Backend = BackendChoice.ASYNCIO,
    base_url: BaseUrl = None,
    scenario_id: ScenarioId = None,
    timeout: Seconds = 30.0,
    max_duration: MaxDuration = 300.0,
    as_json: AsJson = False,
) -> None:
    """Send N conversations x M turns and report turns/s, latency and errors.

    Without --base-url, the emulator is served on 127.0.0.1 for the run. With one, the token
    comes from QUICKCHAT_API_TOKEN.
    """
    _check_together(transport, backend, redis_url, counted=rate or rate_per_minute)
    with guard():
        plan = LoadPlan(
            conversations=conversations,
            turns=turns,
            concurrency=concurrency,
            rate_per_second=rate,
            rate_per_minute=rate_per_minute,
            redis_url=redis_url,
            rate_key=rate_key,
            transport=transport.value,
            base_url=base_url,
            token=os.environ.get("QUICKCHAT_API_TOKEN") if base_url is not None else None,
            scenario_id=scenario_id,
            timeout=timeout,
            max_duration=max_duration,
        )
        report = _run(plan, backend, as_json=as_json)
    _finish(report, as_json=as_json)


def _check_together(
    transport: TransportChoice, backend: BackendChoice, redis_url: str | None, *, counted: object
) -> None:
    """Refuse options that cannot go together, as typer refuses a bad one."""
    if transport is TransportChoice.AIOHTTP and backend is BackendChoice.TRIO:
        raise typer.BadParameter("aiohttp runs on asyncio only.", param_hint="--transport")
    if redis_url is not None and backend is BackendChoice.TRIO:
        raise typer.BadParameter(
            "the Redis limiter runs on asyncio only.", param_hint="--redis-url"
        )
    if redis_url is not None and counted is None:
        raise typer.BadParameter(
            "give --rate or --rate-per-minute to count.", param_hint="--redis-url"
        )
