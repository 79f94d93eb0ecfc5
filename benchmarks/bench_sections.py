"""The sections after the fan-out table: latency at one in flight, the SDK on aiohttp cut layer
by layer, and memory. All of them use only the SDK's public API.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Self

import aiohttp
import httpx
import httpx2
from bench_rows import BODY, HEADERS, ROWS, SCENARIO_ID, TOKEN, Row, measure, workers
from bench_server import REPLIES

from quickchat_async import AsyncQuickchat, ChatRequest, HTTPResponse, Timeout


# --- latency at one in flight -------------------------------------------------------------------

#: The raw client each SDK row wraps, by the name of the SDK's transport or engine.
RAW_OF_ENGINE = {"Httpx2Transport": "raw httpx2", "HttpxTransport": "raw httpx 0.28"}


async def latencies(url: str, count: int) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Median seconds per request, one at a time, raw and through the SDK; and the pairs
    (raw client, SDK row on it) that were interleaved.

    Each SDK client is interleaved with the raw client it wraps, first one then the other
    leading: whatever runs right after a slow httpx request pays for its cache misses, which
    once showed as +12% for the SDK on aiohttp that the same requests in the other order
    did not show.
    """
    async with (
        aiohttp.ClientSession() as session,
        httpx2.AsyncClient() as raw_httpx2,
        httpx.AsyncClient() as raw_httpx,
        httpx.AsyncClient() as sdk_http_client,
        AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, base_url=url) as sdk_default,
        AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, base_url=url, http_client=sdk_http_client
        ) as sdk_httpx,
        AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, base_url=url, transport="aiohttp"
        ) as sdk_aiohttp,
    ):
        conversations = {
            "SDK default": sdk_default.conversation(),
            "SDK on httpx 0.28": sdk_httpx.conversation(),
            "SDK on aiohttp": sdk_aiohttp.conversation(),
        }

        async def one_aiohttp() -> None:
            async with session.post(f"{url}/chat", json=BODY, headers=HEADERS) as response:
                assert response.status == 200
                await response.json()

        def one_httpx(
            client: httpx.AsyncClient | httpx2.AsyncClient,
        ) -> Callable[[], Awaitable[None]]:
            async def one() -> None:
                response = await client.post(f"{url}/chat", json=BODY, headers=HEADERS)
                assert response.status_code == 200
                response.json()

            return one

        def say(name: str) -> Callable[[], Awaitable[object]]:
            return lambda: conversations[name].say("Hello!")

        steps: dict[str, Callable[[], Awaitable[object]]] = {
            "raw httpx2": one_httpx(raw_httpx2),
            "raw httpx 0.28": one_httpx(raw_httpx),
            "raw aiohttp": one_aiohttp,
            **{name: say(name) for name in conversations},
        }
        default_engine = type(sdk_default.transport).__name__
        pairs = [
            (RAW_OF_ENGINE.get(default_engine, "raw httpx2"), "SDK default"),
            ("raw httpx 0.28", "SDK on httpx 0.28"),
            ("raw aiohttp", "SDK on aiohttp"),
        ]
        for step in steps.values():  # warm up: connect, first-use costs
            for _ in range(20):
                await step()
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for pair in pairs:
            for n in range(count):
                for name in pair if n % 2 else reversed(pair):
                    start = time.perf_counter()
                    await steps[name]()
                    samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items() if values}, pairs


# --- the SDK on aiohttp, layer by layer ---------------------------------------------------------


def layer(kind: str) -> Row:
    """The SDK on aiohttp cut at one layer, to see what each layer costs (`ANATOMY`)."""

    async def run(url: str, total: int, in_flight: int) -> str:
        client = AsyncQuickchat(
            token=TOKEN,
            scenario_id=SCENARIO_ID,
            base_url=url,
            transport="aiohttp",
            max_connections=in_flight,
        )
        request = ChatRequest(
            url=f"{url}/chat",
            headers=HEADERS,
            body=json.dumps(BODY).encode(),
            timeout=Timeout(),
            max_response_bytes=1024 * 1024,
        )

        async def work(n: int) -> None:
            conversation = client.conversation(max_history=1 if kind == "history-1" else None)
            for _ in range(n):
                if kind == "transport":
                    response = await client.transport.send(request)
                    assert response.status_code == 200
                    assert json.loads(response.content)["reply"]
                elif kind == "client":
                    assert (await client.say("Hello!", conv_id="bench-conv")).html
                else:
                    assert (await conversation.say("Hello!")).html

        enabled = gc.isenabled()
        if kind == "no-gc":
            gc.disable()
        try:
            async with client:
                await workers(total, in_flight, work)
        finally:
            if enabled:
                gc.enable()
        return type(client.transport).__name__

    return run


#: The SDK on aiohttp, one layer at a time: what separates it from raw aiohttp.
ANATOMY: dict[str, Row] = {
    "AiohttpTransport.send (request built once)": layer("transport"),
    "client.say (stateless)": layer("client"),
    "Conversation.say, max_history=1": layer("history-1"),
    "Conversation.say, whole history kept": layer("history"),
    "Conversation.say, whole history, gc disabled": layer("no-gc"),
}


class YoungPasses:
    """The time the garbage collector spends in its young passes (generations 0 and 1) while the
    block runs; full passes (generation 2, such as measure()'s own) are left out."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif info["generation"] < 2:  # the oldest generation is 2
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


class GcCensus:
    """Each young pass of the garbage collector while the block runs: its generation, how many
    objects it walked (generation 0's, counted before the pass starts) and how long it took."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, int, float]] = []
        self._start = 0.0
        self._objects = 0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if generation == 2:  # the oldest generation: measure()'s own full pass
            return
        if phase == "start":
            # counted before the clock starts: listing the objects takes as long as the pass
            self._objects = len(gc.get_objects(generation=0))
            self._start = time.perf_counter()
        else:
            self.passes.append((generation, self._objects, time.perf_counter() - self._start))

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def gc_census(url: str, names: list[str], total: int, in_flight: int) -> None:
    """Print, for each row, its young passes: how many, the objects each walks, their time."""
    runs = {**ROWS, **ANATOMY}
    print(f"\n| {total} requests, {in_flight} in flight | young passes (gen 0/1) ", end="")
    print("| objects in gen 0 a pass | µs a gen 0 pass | µs a gen 1 pass | young gc µs a request |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        measure(runs[name], url, total // 4, in_flight)  # first-use costs, out of the count
        with GcCensus() as census:
            measure(runs[name], url, total, in_flight)
        young = [p for p in census.passes if p[0] == 0]
        older = [p for p in census.passes if p[0] == 1]
        objects = statistics.mean(p[1] for p in young) if young else 0
        each = [
            statistics.mean(p[2] for p in found) * 1e6 if found else 0 for found in (young, older)
        ]
        per_request = sum(p[2] for p in census.passes) / total * 1e6
        print(
            f"| {name} | {len(young)}/{len(older)} | {objects:.0f} | {each[0]:.0f} | {each[1]:.0f} "
            f"| {per_request:.1f} |"
        )


def layers(
    url: str, total: int, in_flight: int, rounds: int
) -> dict[str, tuple[float, tuple[int, ...], float]]:
    """Each layer of `ANATOMY`, in rounds interleaved with raw aiohttp: its best rate, and the
    garbage collector's passes per generation and seconds in young passes in its last round."""
    rates: dict[str, tuple[float, tuple[int, ...], float]] = {}
    runs = {"raw aiohttp": ROWS["raw aiohttp"], **ANATOMY}
    for _ in range(rounds):
        for name, run in runs.items():
            before = [generation["collections"] for generation in gc.get_stats()]
            with YoungPasses() as young:
                rate = measure(run, url, total, in_flight)[0]
            passes = tuple(
                generation["collections"] - start - (n == 2)  # less measure()'s gc.collect()
                for n, (generation, start) in enumerate(zip(gc.get_stats(), before, strict=True))
            )
            best = max(rates[name][0], rate) if name in rates else rate
            rates[name] = (best, passes, young.seconds)
    return rates


def print_layers(
    anatomy: dict[str, tuple[float, tuple[int, ...], float]], in_flight: int, total: int
) -> None:
    print(f"\n| the SDK on aiohttp, layer by layer, {in_flight} in flight ", end="")
    print("| requests/s | vs raw | gc passes (gen 0/1/2) | young gc µs a request |")
    print("|---|---:|---:|---:|---:|")
    raw = anatomy["raw aiohttp"][0]
    for name, (rate, passes, collected) in anatomy.items():
        gc_passes = "/".join(map(str, passes))
        print(
            f"| {name} | {rate:.0f} | {rate / raw:.2f}x | {gc_passes} "
            f"| {collected / total * 1e6:.1f} |"
        )


# --- memory -------------------------------------------------------------------------------------


class CannedTransport:
    """A `Transport` answering every request with the same chat reply, without any I/O."""

    def __init__(self) -> None:
        self._response = HTTPResponse(
            200, {"content-type": "application/json"}, REPLIES["/chat"].encode()
        )

    async def send(self, request: ChatRequest) -> HTTPResponse:
        assert request.body
        return self._response

    async def aclose(self) -> None:
        pass


def memory_per_object(count: int = 10_000) -> tuple[float, float]:
    """Bytes per idle Conversation, and per history turn (tracemalloc, `count` of each)."""

    async def measure_memory() -> tuple[float, float]:
        async with AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, transport=CannedTransport()
        ) as client:
            conversation = client.conversation()
            for _ in range(100):  # first-use costs: caches, the conv_id, the transport
                await conversation.say("Hello!")
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                idle = [client.conversation() for _ in range(count)]
                per_conversation = (tracemalloc.get_traced_memory()[0] - before) / len(idle)
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                for n in range(count):
                    await conversation.say(f"message {n}")
                gc.collect()
                per_turn = (tracemalloc.get_traced_memory()[0] - before) / count
            finally:
                tracemalloc.stop()
            return per_conversation, per_turn

    return asyncio.run(measure_memory())


# VmHWM, not ru_maxrss: on Linux, ru_maxrss keeps the high-water mark of the address space an
# exec replaced, here the benchmark's own (subprocess forks it), which is twice this process's.
PEAK_RSS = """
import pathlib, resource, sys
from quickchat_async import AsyncQuickchat
client = AsyncQuickchat(token="t", scenario_id="s")
held = [client.conversation() for _ in range(int(sys.argv[1]))]
status = pathlib.Path("/proc/self/status")
if status.exists():
    print(next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
               if line.startswith("VmHWM:")))
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(conversations: int = 100_000) -> int:
    """Peak RSS (bytes) of a fresh process holding this many idle conversations."""
    out = subprocess.run(  # noqa: S603 -- this interpreter, our own script
        [sys.executable, "-c", PEAK_RSS, str(conversations)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())
