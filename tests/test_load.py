"""The load run and the `load` command, against the emulator served on loopback."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from quickchat_async._cli_load import register
from quickchat_async._load import LoadReport, run_load
from quickchat_async._version import __version__
from quickchat_async.emulator import DEMO_SCENARIO, EmulatorService, serve
from quickchat_async.testing import Emulator


@pytest.fixture(name="app")
def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The CLI under test."""

    register(app)
    return app


class TestLoadCommand:
    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    def test_json_summary(self, app, transport):
        """A small run against the emulator reports every turn in JSON."""
        result = CliRunner().invoke(
            app, ["load", "-n", "6", "-m", "2", "-c", "3", "--transport", transport, "--json"]
        )

        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout[result.stdout.index("{") :])
        assert data["turns_ok"] == 12
        assert data["turns_failed"] == 0
        assert data["transport"] == transport
        assert data["latency_ms"]["p50"] <= data["latency_ms"]["max"]

    def test_table_summary_on_trio(self, app):
        """Without --json, a table of the measures is printed; trio works too."""
        result = CliRunner().invoke(
            app, ["load", "-n", "2", "-m", "1", "--backend", "trio", "--rate", "1000"]
        )

        assert result.exit_code == 0, result.output
        assert "turns/s" in result.output
        assert "latency p99" in result.output

    def test_aiohttp_on_trio_refused(self, app):
        """aiohttp on trio is refused before anything runs."""
        result = CliRunner().invoke(app, ["load", "--transport", "aiohttp", "--backend", "trio"])

        assert result.exit_code != 0
        assert "asyncio only" in result.output

    def test_bounds(self, app):
        """Counts beyond the bounds are refused."""
        result = CliRunner().invoke(app, ["load", "-n", "1000000"])

        assert result.exit_code != 0

    def test_unreachable_endpoint_fails(self, app, monkeypatch):
        """When no turn succeeds, the errors are listed and the exit code is 1."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", "t")
        result = CliRunner().invoke(
            app,
            [
                "load", "-n", "2", "-m", "1", "--base-url", "http://127.0.0.1:9",
                "--scenario-id", "s", "--timeout", "2",
            ],
        )  # fmt: skip

        assert result.exit_code == 1, repr(result.exception)
        assert isinstance(result.exception, SystemExit)
        assert "APIConnectionError" in result.output

    def test_stopped_at_max_duration(self, app, monkeypatch):
        """A run cut short by --max-duration says so in its summary."""
        service = EmulatorService(latency=0.5)
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", "demo-token")
        with serve(service) as server:
            result = CliRunner().invoke(
                app,
                [
                    "load", "-n", "3", "-m", "1", "--base-url", server.base_url,
                    "--scenario-id", "demo", "--max-duration", "0.2",
                ],
            )  # fmt: skip

        assert result.exit_code == 1
        assert "at --max-duration" in result.output


@pytest.mark.anyio
class TestRunLoad:
    async def test_retries_and_errors_are_counted(self):
        """Faults show up as retries (when retried) and as errors by type."""
        async with Emulator() as emulator:
            emulator.faults.script(["rate_limit", "not_json"])
            report = await run_load(
                conversations=1,
                turns=3,
                concurrency=1,
                base_url=emulator.base_url,
                token=emulator.token,
                scenario_id=emulator.scenario_id,
            )

        assert report.retries == 1
        assert report.errors == {"UnexpectedResponseError": 1}
        assert report.turns_ok == 0  # the failed first turn ends the conversation
        assert report.conversations_failed == 1

    async def test_time_bound(self):
        """A run stops at max_duration and says so."""
        async with Emulator(latency=0.2) as emulator:
            report = await run_load(
                conversations=50,
                turns=1,
                concurrency=1,
                base_url=emulator.base_url,
                token=emulator.token,
                scenario_id=emulator.scenario_id,
                max_duration=0.3,
            )

        assert report.timed_out
        assert report.turns_ok < 50

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    async def test_user_agent_names_the_engine(self, transport, monkeypatch):
        """A load run's requests name the HTTP engine it was asked to use."""
        agents: list[str] = []
        handle_chat = EmulatorService.handle_chat

        def recording(service, headers, body):
            agents.extend(v for k, v in headers.items() if k.lower() == "user-agent")
            return handle_chat(service, headers, body)

        monkeypatch.setattr(EmulatorService, "handle_chat", recording)
        with serve(EmulatorService()) as server:
            report = await run_load(
                conversations=2,
                turns=1,
                concurrency=2,
                transport=transport,
                base_url=server.base_url,
                token=DEMO_SCENARIO.tokens[0],
                scenario_id=DEMO_SCENARIO.scenario_id,
            )

        assert report.turns_ok == 2
        assert len(agents) == 2
        assert all(a.startswith(f"quickchat-async/{__version__} {transport}/") for a in agents)

    @pytest.mark.parametrize(
        "options",
        [
            {"conversations": 0},
            {"turns": 101},
            {"concurrency": 0},
            {"max_duration": 0},
            {"transport": "curl", "base_url": "http://127.0.0.1:9"},
        ],
    )
    async def test_bad_options(self, options):
        """Out-of-range counts and unknown transports are refused."""
        with pytest.raises(ValueError):  # noqa: PT011 -- each has its own message
            await run_load(**options)


def test_percentiles():
    """Percentiles are nearest-rank over the sorted latencies."""
    report = LoadReport(
        conversations=1,
        turns_per_conversation=100,
        turns_ok=100,
        turns_failed=0,
        conversations_failed=0,
        elapsed=2.0,
        latencies=tuple(n / 1000 for n in range(1, 101)),
        errors={},
        retries=0,
        transport="httpx",
        concurrency=1,
    )
    assert report.percentile(0.5) == 0.05
    assert report.percentile(0.99) == 0.099
    assert report.turns_per_second == 50
    empty = LoadReport(
        conversations=1,
        turns_per_conversation=1,
        turns_ok=0,
        turns_failed=1,
        conversations_failed=1,
        elapsed=0.0,
        latencies=(),
        errors={"X": 1},
        retries=0,
        transport="httpx",
        concurrency=1,
    )
    assert empty.percentile(0.5) is None
    assert empty.turns_per_second == 0
    assert empty.as_dict()["latency_ms"]["max"] is None
