"""OpenTelemetry: a CLIENT span per turn on the GenAI conventions, attempt events, a histogram.

Spans and measurements go to the OpenTelemetry SDK's in-memory exporter and reader, through
providers handed to `OpenTelemetry`, so the process-wide providers are never set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from quickchat_async import (
    APIConnectionError,
    AsyncQuickchat,
    ScenarioNotFoundError,
    ServiceUnavailableError,
)
from quickchat_async.emulator import Fault, Scenario
from quickchat_async.otel import CONTENT_ENV, DURATION_BUCKETS, OpenTelemetry
from quickchat_async.testing import Emulator

from ._wire import API_KEY, SCENARIO_ID, TOKEN, Wire


pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.provider.name": "quickchat",
    "gen_ai.agent.id": "scn-otel",
    "server.address": "127.0.0.1",
    "server.port": 9,
}


class Recorded:
    """An in-memory span exporter and metric reader behind one `OpenTelemetry`."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, **options: Any) -> OpenTelemetry:
        return OpenTelemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def spans(self) -> list[ReadableSpan]:
        return [
            span for span in self.exporter.get_finished_spans() if span.name.startswith("invoke")
        ]

    def span(self) -> ReadableSpan:
        (span,) = self.spans()
        return span

    def durations(self) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        assert data is not None
        points: list[HistogramDataPoint] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    assert metric.name == "gen_ai.client.operation.duration"
                    assert metric.unit == "s"
                    points.extend(metric.data.data_points)  # type: ignore[arg-type]
        return points

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture(name="recorded")
def _recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    yield recorded
    recorded.shutdown()


@pytest.fixture(name="emulator")
def _emulator() -> Emulator:
    return Emulator(scenarios=[Scenario("scn-otel", tokens=(TOKEN,), api_keys=(API_KEY,))])


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


class TestASpanPerTurn:
    async def test_a_success(self, emulator: Emulator, recorded: Recorded):
        """One CLIENT span `invoke_agent`, its GenAI attributes, the conversation's ID learnt."""
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            reply = await client.say("Hello")
        span = recorded.span()
        assert span.name == "invoke_agent"
        assert span.kind is SpanKind.CLIENT
        assert dict(span.attributes or {}) == {**BASE, "gen_ai.conversation.id": reply.conv_id}
        assert events(span) == [("quickchat.attempt", {})]
        assert span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "quickchat_async"

    async def test_a_known_conversation_is_on_the_span_from_the_start(
        self, emulator: Emulator, recorded: Recorded
    ):
        """A turn of a started conversation carries its ID from the start (for samplers)."""
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            conv = client.conversation()
            await conv.say("Hello")
            recorded.exporter.clear()
            await conv.say("Again")
        span = recorded.span()
        assert span.attributes is not None
        assert span.attributes["gen_ai.conversation.id"] == conv.conv_id

    async def test_a_retried_turn(self, emulator: Emulator, recorded: Recorded):
        """Each attempt is an event; resends carry http.request.resend_count; one span in all."""
        emulator.faults.script(
            [Fault("unavailable", retry_after="0"), Fault("rate_limit", retry_after="0")]
        )
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            reply = await client.say("Hello")
        span = recorded.span()
        assert reply.attempts == 3
        assert events(span) == [
            ("quickchat.attempt", {}),
            (
                "quickchat.attempt.failed",
                {
                    "error.type": "ServiceUnavailableError",
                    "quickchat.outcome_unknown": False,
                    "http.response.status_code": 503,
                },
            ),
            ("quickchat.attempt", {"http.request.resend_count": 1}),
            (
                "quickchat.attempt.failed",
                {
                    "error.type": "RateLimitError",
                    "quickchat.outcome_unknown": False,
                    "http.request.resend_count": 1,
                    "http.response.status_code": 429,
                },
            ),
            ("quickchat.attempt", {"http.request.resend_count": 2}),
        ]
        assert span.attributes is not None
        assert span.attributes["http.request.resend_count"] == 2
        assert "error.type" not in span.attributes
        (point,) = recorded.durations()
        assert point.count == 1

    async def test_a_failure(self, emulator: Emulator, recorded: Recorded):
        """A failed turn: error.type is the SDK error's class, the status ERROR."""
        emulator.faults.script([Fault("unavailable", retry_after="3600")])
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.say("Hello")
        span = recorded.span()
        assert span.attributes is not None
        assert span.attributes["error.type"] == "ServiceUnavailableError"
        assert span.attributes["quickchat.outcome_unknown"] is False
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ServiceUnavailableError"
        assert events(span)[-1][1]["quickchat.retry_after"] == 3600

    async def test_a_refused_request(self, recorded: Recorded):
        """A 4xx is a failure of the turn like any other (here the scenario is unknown)."""
        emulator = Emulator()
        async with emulator.client(scenario_id="nope", telemetry=recorded.telemetry()) as client:
            with pytest.raises(ScenarioNotFoundError):
                await client.say("Hello")
        assert recorded.span().attributes["error.type"] == "ScenarioNotFoundError"  # type: ignore[index]

    async def test_an_ambiguous_failure_is_marked(self, emulator: Emulator, recorded: Recorded):
        """A failure after which the message may have landed says so on the span and event."""
        emulator.faults.script(["drop_after"])
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.say("Hello")
        assert info.value.outcome_unknown
        span = recorded.span()
        assert span.attributes is not None
        assert span.attributes["error.type"] == "APIConnectionError"
        assert span.attributes["quickchat.outcome_unknown"] is True
        failed = [attrs for name, attrs in events(span) if name == "quickchat.attempt.failed"]
        assert [attrs["quickchat.outcome_unknown"] for attrs in failed] == [True]

    async def test_a_cancellation(self, emulator: Emulator, recorded: Recorded):
        """A cancelled turn ends its span with error.type `cancelled`, and is measured too."""
        emulator.faults.script([Fault("slow_headers", delay=5)])
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            with anyio.move_on_after(0.05):
                await client.say("Hello")
        span = recorded.span()
        assert span.attributes is not None
        assert span.attributes["error.type"] == "cancelled"
        assert span.attributes["quickchat.outcome_unknown"] is True
        assert span.status.status_code is StatusCode.ERROR
        (point,) = recorded.durations()
        assert point.attributes is not None
        assert point.attributes["error.type"] == "cancelled"

    async def test_the_span_is_current_during_the_turn(self, recorded: Recorded):
        """The HTTP engine runs inside the turn's span: its own spans nest under it."""
        seen: list[trace.Span] = []
        wire = Wire()

        def handler(request: httpx2.Request) -> httpx2.Response:
            seen.append(trace.get_current_span())
            return wire.handler(request)

        async with (
            httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http,
            AsyncQuickchat(
                token=TOKEN,
                scenario_id=SCENARIO_ID,
                http_client=http,
                telemetry=recorded.telemetry(),
            ) as client,
        ):
            await client.say("Hello")
        (during,) = seen
        assert during.get_span_context() == recorded.span().get_span_context()
        assert trace.get_current_span() is trace.INVALID_SPAN

    async def test_a_named_agent_names_the_span(self, emulator: Emulator, recorded: Recorded):
        """agent_name gives the span name `invoke_agent {name}` and gen_ai.agent.name."""
        async with emulator.client(telemetry=recorded.telemetry(agent_name="Support")) as client:
            await client.say("Hello")
        span = recorded.span()
        assert span.name == "invoke_agent Support"
        assert span.attributes is not None
        assert span.attributes["gen_ai.agent.name"] == "Support"


class TestTheHistogram:
    async def test_one_measurement_a_turn_with_the_spans_attributes(
        self, emulator: Emulator, recorded: Recorded
    ):
        """gen_ai.client.operation.duration: seconds, the advised buckets, error.type on failure."""
        emulator.faults.script([None, Fault("unavailable", retry_after="3600")])
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            await client.say("Hello")
            with pytest.raises(ServiceUnavailableError):
                await client.say("Hello")
        by_error = {
            (point.attributes or {}).get("error.type"): point for point in recorded.durations()
        }
        assert set(by_error) == {None, "ServiceUnavailableError"}
        ok = by_error[None]
        assert dict(ok.attributes or {}) == BASE
        assert ok.count == 1
        assert 0 <= ok.sum < 5
        assert tuple(ok.explicit_bounds) == DURATION_BUCKETS
        assert dict(by_error["ServiceUnavailableError"].attributes or {}) == {
            **BASE,
            "error.type": "ServiceUnavailableError",
        }


class TestContent:
    async def test_not_recorded_by_default(self, emulator: Emulator, recorded: Recorded):
        """Neither the message nor the reply is on the span unless the user opts in."""
        async with emulator.client(telemetry=recorded.telemetry()) as client:
            await client.say("My card number is 4111")
        span = recorded.span()
        assert "4111" not in json.dumps(dict(span.attributes or {}))
        assert "gen_ai.input.messages" not in (span.attributes or {})

    @pytest.mark.parametrize("how", ["option", "environment"])
    async def test_recorded_on_opt_in(
        self, emulator: Emulator, recorded: Recorded, how: str, monkeypatch: pytest.MonkeyPatch
    ):
        """Opted in (record_content=True, or the standard variable), the span holds both texts."""
        if how == "option":
            telemetry = recorded.telemetry(record_content=True)
        else:
            monkeypatch.setenv(CONTENT_ENV, "true")
            telemetry = recorded.telemetry()
        async with emulator.client(telemetry=telemetry) as client:
            reply = await client.say("Hello")
        attributes = recorded.span().attributes or {}
        assert json.loads(str(attributes["gen_ai.input.messages"])) == [
            {"role": "user", "parts": [{"type": "text", "content": "Hello"}]}
        ]
        assert json.loads(str(attributes["gen_ai.output.messages"])) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": reply.html}],
                "finish_reason": "stop",
            }
        ]

    def test_the_environment_says_no_otherwise(self, monkeypatch: pytest.MonkeyPatch):
        """Any value but a yes leaves content off; record_content=False wins over the variable."""
        monkeypatch.setenv(CONTENT_ENV, "false")
        assert not OpenTelemetry().record_content
        monkeypatch.setenv(CONTENT_ENV, "TRUE")
        assert OpenTelemetry().record_content
        assert not OpenTelemetry(record_content=False).record_content


class TestNoCredential:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_no_span_or_measurement_holds_one(
        self, emulator: Emulator, recorded: Recorded, flavor: str
    ):
        """Content recorded, through successes, retries and failures: no credential anywhere."""
        emulator.faults.script(["rate_limit", None, "drop_after", "not_json", "html_502"])
        async with emulator.client(
            flavor=flavor,  # type: ignore[arg-type]
            telemetry=recorded.telemetry(record_content=True),
            default_headers={"X-Team": "support"},
        ) as client:
            conv = client.conversation()
            await conv.say("Hello", extra_headers={"X-Request": "1"}, extra_body={"channel": "web"})
            for text in ("Dropped", "Not JSON", "Bad gateway"):
                with pytest.raises(Exception):  # noqa: B017, PT011 -- any failure will do
                    await client.say(text)
        spans = recorded.spans()
        assert len(spans) == 4
        dumped = "\n".join(span.to_json() for span in spans)
        data = recorded.reader.get_metrics_data()
        assert data is not None
        dumped += data.to_json()
        assert "Hello" in dumped  # content was recorded, so the check looks at real text
        for secret in (TOKEN, API_KEY, "Bearer"):
            assert secret not in dumped


class TestChosenWhenTheClientIsMade:
    def run(self, code: str, **env: str) -> str:
        done = subprocess.run(  # noqa: S603 -- our own code
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **env,
            },
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def test_the_global_providers_by_default(self):
        """With the API installed, a client reports to the providers the application set."""
        out = self.run(
            "import anyio\n"
            "from opentelemetry import trace\n"
            "from opentelemetry.sdk.trace import TracerProvider\n"
            "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
            "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
            "InMemorySpanExporter\n"
            "from quickchat_async.testing import Emulator\n"
            "exporter = InMemorySpanExporter()\n"
            "provider = TracerProvider()\n"
            "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
            "async def main():\n"
            "    async with Emulator().client() as client:\n"
            "        trace.set_tracer_provider(provider)  # after the client: still reported\n"
            "        await client.say('Hello')\n"
            "anyio.run(main)\n"
            "print([span.name for span in exporter.get_finished_spans()])\n"
        )
        assert out.strip() == "['invoke_agent']"

    def test_nothing_is_imported_without_the_api(self):
        """Without opentelemetry, clients work and nothing of it is imported or looked for again."""
        out = self.run(
            "import sys\n"
            "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
            "import anyio\n"
            "from quickchat_async.testing import Emulator\n"
            "async def main():\n"
            "    async with Emulator().client() as client:\n"
            "        await client.say('Hello')\n"
            "anyio.run(main)\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')))\n"
            "print('quickchat_async._otel' in sys.modules)\n"
        )
        assert out.split("\n")[:2] == ["[]", "False"]

    def test_importing_the_sdk_imports_no_opentelemetry(self):
        """`import quickchat_async` loads no part of OpenTelemetry (only a client does)."""
        out = self.run(
            "import sys, quickchat_async\n"
            "print(any(m.startswith('opentelemetry') for m in sys.modules))\n"
        )
        assert out.strip() == "False"

    async def test_none_turns_it_off(self, emulator: Emulator):
        """telemetry=None: the client reports nowhere, even with OpenTelemetry installed."""
        async with emulator.client(telemetry=None) as client:
            assert "OpenTelemetry" not in repr(client._telemetry)
            await client.say("Hello")
