"""Instructions per request, counted by callgrind: steadier than rates on a shared machine.

    python benchmarks/instructions.py                   # every layer, 640 and 3,200 requests
    python benchmarks/instructions.py --layers raw conv
    python benchmarks/instructions.py --no-network      # the SDK's own work: a canned transport

Each layer runs twice under `valgrind --tool=callgrind` (64 in flight against nginx on
127.0.0.1, or the fallback server): with 640 requests and with 3,200, so that start-up cancels
out; the difference over 2,560 requests is what one request costs. Layers: raw aiohttp
(`session.post`), `AiohttpTransport.send` with a request built once, `client.say`,
`Conversation.say` with `max_history=1`, and with the whole history kept. With `--no-network`,
the SDK's layers run on a transport that answers every request at once with a fixed reply, so
that only the SDK's own work is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from quickchat_async import AsyncQuickchat
from quickchat_async._wire import encode_turn


sys.path.insert(0, str(Path(__file__).parent))
from bench_sections import CannedTransport
from bench_server import reply_server


IN_FLIGHT = 64
LAYERS = ("raw", "transport", "say", "conv", "history")
SMALL, LARGE = 640, 3200
BODY = json.dumps({"scenario_id": "s", "conv_id": "bench-conv", "text": "Hello!"}).encode()
HEADERS = {"Authorization": "Bearer t", "Content-Type": "application/json"}


async def raw(url: str, total: int) -> None:
    async with aiohttp.ClientSession() as session:

        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.post(f"{url}/chat", data=BODY, headers=HEADERS) as response:
                    if response.status != 200:
                        raise RuntimeError(response.status)
                    await response.read()

        await asyncio.gather(*(worker(total // IN_FLIGHT) for _ in range(IN_FLIGHT)))


async def sdk(url: str, total: int, layer: str, *, canned: bool) -> None:
    async with AsyncQuickchat(
        token="t",  # noqa: S106 -- nginx ignores it
        scenario_id="s",
        base_url=url,
        transport=CannedTransport() if canned else "aiohttp",
        telemetry=None,
    ) as client:
        config = client.config
        request = encode_turn(config, config.default_call, text="Hello!", conv_id="bench-conv")

        async def worker(count: int) -> None:
            conv = client.conversation(max_history=None if layer == "history" else 1)
            for _ in range(count):
                if layer == "transport":
                    await client.transport.send(request)
                elif layer == "say":
                    await client.say("Hello!", conv_id="bench-conv")
                else:
                    await conv.say("Hello!")

        await asyncio.gather(*(worker(total // IN_FLIGHT) for _ in range(IN_FLIGHT)))


def counted(valgrind: str, layer: str, total: int, url: str, *, canned: bool) -> int:
    """Instructions callgrind counts for a run of `total` requests through `layer`."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(  # noqa: S603 -- valgrind on this very script
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--run",
                layer,
                str(total),
                url,
                *(["--no-network"] if canned else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", choices=LAYERS, default=list(LAYERS))
    parser.add_argument(
        "--no-network", action="store_true", help="the SDK's layers on a canned transport"
    )
    parser.add_argument("--run", nargs=3, metavar=("LAYER", "TOTAL", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    canned = args.no_network
    if args.run:
        layer, total, url = args.run[0], int(args.run[1]), args.run[2]
        asyncio.run(raw(url, total) if layer == "raw" else sdk(url, total, layer, canned=canned))
        return
    layers = [layer for layer in args.layers if not canned or layer in {"say", "conv", "history"}]
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    with reply_server() as (url, server):
        where = "a canned transport (no network)" if canned else server
        print(f"# instructions per request, {IN_FLIGHT} in flight, against {where}")
        for layer in layers:
            small = counted(valgrind, layer, SMALL, url, canned=canned)
            large = counted(valgrind, layer, LARGE, url, canned=canned)
            print(f"{layer:>10}: {(large - small) / (LARGE - SMALL) / 1000:,.0f}k")


if __name__ == "__main__":
    main()
