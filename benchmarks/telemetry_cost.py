"""What the telemetry seam costs a turn, with no network: a transport that answers at once.

    python benchmarks/telemetry_cost.py [TURNS]

Prints microseconds per turn of `client.say()` with `telemetry=None`, with the default (the
OpenTelemetry API with no SDK configured, if installed), and with the OpenTelemetry SDK's
providers (no exporter), best of five runs each.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from quickchat_async import AsyncQuickchat, ChatRequest, HTTPResponse
from quickchat_async.otel import OpenTelemetry


RESPONSE = HTTPResponse(200, {}, b'{"reply":"Hi","conv_id":"c-1","ord_number":3}')


class Fixed:
    async def send(self, request: ChatRequest, /) -> HTTPResponse:  # noqa: ARG002
        return RESPONSE

    async def aclose(self):
        pass


def telemetry(kind: str) -> dict[str, Any]:
    if kind == "none":
        return {"telemetry": None}
    if kind == "default":
        return {}
    providers = {"tracer_provider": TracerProvider(), "meter_provider": MeterProvider()}
    return {"telemetry": OpenTelemetry(**providers)}


async def per_turn(kind: str, turns: int) -> float:
    options = telemetry(kind)
    async with AsyncQuickchat(
        token="t",  # noqa: S106 -- nothing checks it
        scenario_id="s",
        transport=Fixed(),
        **options,
    ) as client:
        for _ in range(2000):
            await client.say("Hello", conv_id="c-1")
        gc.collect()
        start = time.perf_counter()
        for _ in range(turns):
            await client.say("Hello", conv_id="c-1")
        return (time.perf_counter() - start) / turns * 1e6


def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    for kind in ("none", "default", "sdk"):
        best = min(anyio.run(per_turn, kind, turns) for _ in range(5))
        print(f"{kind:8s} {best:6.2f} µs a turn")


if __name__ == "__main__":
    main()
