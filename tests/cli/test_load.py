"""`quickchat-async load` and its runner, against the emulator served on loopback."""

from __future__ import annotations

import json

import pytest
import stamina.instrumentation

from quickchat_async import __version__, cli
from quickchat_async.cli._loadrun import LoadPlan, LoadReport, run_load
from quickchat_async.emulator import DEMO_SCENARIO, EmulatorService, serve
from quickchat_async.testing import Emulator

from .conftest import one_error_line


class TestLoadCommand:
    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    def test_json_summary(self, runner, transport):
        """A small run against the emulator reports every turn in JSON."""
        result = runner.invoke(
            cli.app, ["load", "-n", "6", "-m", "2", "-c", "3", "--transport", transport, "--json"]
        )

        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout[result.stdout.index("{") :])
        assert data["turns_ok"] == 12
        assert data["turns_failed"] == 0
        assert data["transport"] == transport
        assert data["concurrency"] == 3
        assert data["latency_ms"]["p50"] <= data["latency_ms"]["max"]

    def test_table_summary_on_trio(self, runner):
        """Without --json, a table of the measures is printed; trio works too."""
        result = runner.invoke(
            cli.app, ["load", "-n", "2", "-m", "1", "--backend", "trio", "--rate", "1000"]
        )

        assert result.exit_code == 0, result.output
        assert "turns/s" in result.output
        assert "latency p99" in result.output

    def test_aiohttp_on_trio_refused(self, runner):
        """aiohttp on trio is a usage error, before anything runs."""
        result = runner.invoke(cli.app, ["load", "--transport", "aiohttp", "--backend", "trio"])

        assert result.exit_code == 2
        assert "asyncio only" in result.output

    def test_bounds(self, runner):
        """Counts beyond the bounds are a usage error."""
        result = runner.invoke(cli.app, ["load", "-n", "1000000"])

        assert result.exit_code == 2

    def test_unreachable_endpoint_fails(self, runner, monkeypatch):
        """When no turn succeeds, the errors are listed and the exit code is 1."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", "t")
        result = runner.invoke(
            cli.app,
            [
                "load", "-n", "2", "-m", "1", "--base-url", "http://127.0.0.1:9",
                "--scenario-id", "s", "--timeout", "2",
            ],
        )  # fmt: skip

        assert result.exit_code == 1, repr(result.exception)
        assert isinstance(result.exception, SystemExit)
        assert "APIConnectionError" in result.output

    def test_a_refused_configuration_is_one_line(self, runner):
        """--base-url without a token: the client's ValidationError, on one line, status 1."""
        result = runner.invoke(
            cli.app, ["load", "--base-url", "http://127.0.0.1:9", "--scenario-id", "s"]
        )

        assert result.exit_code == 1
        assert one_error_line(result.stderr).startswith("error: ValidationError: No credential")

    def test_stopped_at_max_duration(self, runner, monkeypatch):
        """A run cut short by --max-duration says so in its summary."""
        service = EmulatorService(latency=0.5)
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", "demo-token")
        with serve(service) as server:
            result = runner.invoke(
                cli.app,
                [
                    "load", "-n", "3", "-m", "1", "--base-url", server.base_url,
                    "--scenario-id", "demo", "--max-duration", "0.2",
                ],
            )  # fmt: skip

        assert result.exit_code == 1
        assert "at --max-duration" in result.output


def _on(emulator: Emulator, **options: object) -> LoadPlan:
    """A plan against the served `emulator`."""
    return LoadPlan(
        base_url=emulator.base_url,
        token=emulator.token,
        scenario_id=emulator.scenario_id,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
class TestRunLoad:
    async def test_retries_and_errors_are_counted(self):
        """Faults show up as retries (when retried) and as errors by type."""
        async with Emulator() as emulator:
            emulator.faults.script(["rate_limit", "unavailable", "not_json"])
            report = await run_load(_on(emulator, conversations=1, turns=3, concurrency=1))

        assert report.retries == 2
        assert report.errors == {"UnexpectedResponseError": 1}
        assert report.turns_ok == 0  # the failed first turn ends the conversation
        assert report.conversations_failed == 1

    async def test_retry_hooks_are_restored(self):
        """The run counts retries beside the hooks in place, and leaves only those afterwards."""
        seen: list[int] = []

        def other(details: stamina.instrumentation.RetryDetails) -> None:
            seen.append(details.retry_num)

        stamina.instrumentation.set_on_retry_hooks([other])
        try:
            async with Emulator() as emulator:
                emulator.faults.script(["rate_limit"])
                report = await run_load(_on(emulator, conversations=1, turns=1, concurrency=1))
            hooks = stamina.instrumentation.get_on_retry_hooks()
        finally:
            stamina.instrumentation.set_on_retry_hooks(None)

        assert report.retries == 1
        assert seen == [1]
        assert hooks == (other,)

    async def test_runs_the_emulator_when_no_endpoint_is_given(self):
        """Without base_url, the run loads an emulator served for it, with its credentials."""
        report = await run_load(LoadPlan(conversations=3, turns=2, concurrency=2))

        assert report.turns_ok == 6
        assert report.conversations_failed == 0
        assert report.retries == 0

    async def test_time_bound(self):
        """A run stops at max_duration and says so."""
        async with Emulator(latency=0.2) as emulator:
            plan = _on(emulator, conversations=50, turns=1, concurrency=1, max_duration=0.3)
            report = await run_load(plan)

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
            plan = LoadPlan(
                conversations=2,
                turns=1,
                concurrency=2,
                transport=transport,
                base_url=server.base_url,
                token=DEMO_SCENARIO.tokens[0],
                scenario_id=DEMO_SCENARIO.scenario_id,
            )
            report = await run_load(plan)

        assert report.turns_ok == 2
        assert len(agents) == 2
        assert all(a.startswith(f"quickchat-async/{__version__} {transport}/") for a in agents)

    async def test_unknown_transport_is_refused(self):
        """The client refuses an unknown transport, as a ValueError."""
        plan = LoadPlan(
            transport="curl",  # type: ignore[arg-type]
            base_url="http://127.0.0.1:9",
            token="t",
            scenario_id="s",
        )
        with pytest.raises(ValueError, match="Unknown transport 'curl'"):
            await run_load(plan)


class TestLoadPlan:
    @pytest.mark.parametrize(
        "options",
        [
            {"conversations": 0},
            {"conversations": 100_001},
            {"turns": 0},
            {"turns": 101},
            {"concurrency": 0},
            {"max_duration": 0},
        ],
    )
    def test_bounds(self, options):
        """Counts and durations out of their bounds are refused."""
        with pytest.raises(ValueError, match=next(iter(options))):
            LoadPlan(**options)

    def test_repr_hides_the_token(self):
        """The plan's repr shows where it loads, never the token."""
        plan = LoadPlan(base_url="http://127.0.0.1:9", token="tok-CANARY-load-0b7e")

        assert "tok-CANARY" not in repr(plan)
        assert "http://127.0.0.1:9" in repr(plan)


class TestLoadReport:
    def test_percentiles(self):
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

    def test_without_successful_turns(self):
        """With no successful turn there is no percentile, and no rate."""
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
