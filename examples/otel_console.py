"""Tracing turns with OpenTelemetry: every turn's span printed by the console exporter.

    pip install "quickchat-async[otel]" opentelemetry-sdk
    python examples/otel_console.py

With no credentials set it talks to the bundled emulator, in process, which answers the second
message with a 503 first, so one of the spans shows a retried turn. Set QUICKCHAT_API_TOKEN (or
QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID to trace turns with your own AI Agent.

The setup is the one an application makes once, at start-up: a tracer provider and a meter
provider, set as OpenTelemetry's global ones. Clients made after (or before) report to them.
Swap the console exporters for OTLP ones (`opentelemetry-exporter-otlp`) to send the spans
and the `gen_ai.client.operation.duration` histogram to a collector.
"""

from __future__ import annotations

import os
import sys

import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from quickchat_async import AsyncQuickchat
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator


def set_up_opentelemetry() -> tuple[TracerProvider, MeterProvider]:
    """The application's OpenTelemetry: spans and metrics printed on stdout."""
    resource = Resource.create({"service.name": "support-bot"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def make_client() -> AsyncQuickchat:
    """Your AI Agent when QUICKCHAT_* credentials are set, else the emulator, in process."""
    if os.environ.get("QUICKCHAT_API_TOKEN") or os.environ.get("QUICKCHAT_API_KEY"):
        return AsyncQuickchat()
    print("(no QUICKCHAT_API_TOKEN set: talking to the bundled emulator)", file=sys.stderr)
    emulator = Emulator()
    emulator.faults.script([None, Fault("unavailable", retry_after="0")])
    return emulator.client()


async def main() -> None:
    tracer = trace.get_tracer("support-bot")
    async with make_client() as client:
        conv = client.conversation()
        # The application's own span: the SDK's turn spans are its children.
        with tracer.start_as_current_span("handle chat"):
            await conv.say("Hello!")
            reply = await conv.say("How do refunds work?")
    print(f"(the last reply took {reply.attempts} attempt(s))", file=sys.stderr)


if __name__ == "__main__":
    tracer_provider, meter_provider = set_up_opentelemetry()
    anyio.run(main)
    tracer_provider.shutdown()
    meter_provider.shutdown()  # exports the histogram once more, on the way out
