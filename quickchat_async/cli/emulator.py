"""``quickchat-async emulator``: serve the emulator over HTTP until Ctrl-C or SIGTERM.

Serving is `quickchat_async.emulator.run`'s: it binds, starts uvicorn, waits for the signal and
shuts down; this command builds the service from its options and prints where it listens.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quickchat_async.emulator import EmulatorService, FaultKind, Scenario, bundled_kb, load_kb

from ._output import fail, guard


if TYPE_CHECKING:
    from quickchat_async.emulator import ServerHandle

__all__ = ["emulator"]


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


def _print_serving(base_url: str, scenario: Scenario, rates: Mapping[FaultKind, float]) -> None:
    token, api_key = scenario.tokens[0], scenario.api_keys[0]
    lines = [
        f"Quickchat emulator serving at {base_url} (POST {base_url}/chat)",
        f"  scenario_id  {scenario.scenario_id}",
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
            f"QUICKCHAT_SCENARIO_ID={scenario.scenario_id}"
        ),
        "  quickchat-async chat",
        "Ctrl-C to stop.",
    ]
    typer.echo("\n".join(lines))
    sys.stdout.flush()


def _serve(
    service: EmulatorService,
    rates: Mapping[FaultKind, float],
    *,
    host: str,
    port: int,
    allow_remote: bool,
    log_level: LogLevel,
) -> None:
    """Serve until a signal; a server that stops by itself is an error."""
    from quickchat_async.emulator import run  # noqa: PLC0415 -- uvicorn is imported only when serving

    def on_ready(server: ServerHandle) -> None:
        _print_serving(server.base_url, service.scenarios[0], rates)

    if not logging.getLogger().handlers:  # --verbose configured it already
        logging.basicConfig(format="%(levelname)s: %(message)s")
    try:
        run(
            service,
            host=host,
            port=port,
            allow_remote=allow_remote,
            timeout_graceful_shutdown=1,
            log_level=log_level.value,
            configure_logging=False,
            on_ready=on_ready,
        )
    except RuntimeError as exc:  # did not start, or stopped by itself
        fail(str(exc))


def emulator(  # noqa: PLR0917 -- one option per setting; typer passes keywords
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
    with guard():
        service = EmulatorService(
            scenarios=[Scenario(scenario_id, tokens=[token], api_keys=[api_key])],
            knowledge_base=load_kb(kb) if kb is not None else bundled_kb(),
            latency=latency_ms / 1000,
            fault_rates=dict(rates.items()),  # a copy whose key type the service accepts
            seed=seed,
        )
        _serve(service, rates, host=host, port=port, allow_remote=allow_remote, log_level=log_level)
    typer.echo("Emulator stopped.", err=True)
