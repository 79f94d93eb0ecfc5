"""The blocking client's benchmark: beside raw httpx2.Client, and on Locust beside FastHttpUser.

Run with ``nox -s bench`` (after `bench.py`) or ``python benchmarks/bench_sync.py`` (``--quick``
for a smoke run of seconds). The server is `bench_server`'s: nginx on 127.0.0.1 answering
``POST /chat`` with a fixed Quickchat reply (or its fallback server without nginx).

1. Threads: turns per second of `SyncConversation.say` (each thread its own conversation, one
   shared `Quickchat`) beside raw `httpx2.Client` posting the same JSON and parsing the reply, at
   one request in flight and with 16 threads; the rows alternate over five rounds and keep
   their best. The stateless `Quickchat.say` is shown too.
2. Locust: one worker process (``locust --headless``, users that never wait) driving
   `QuickchatUser` conversations, beside Locust's own `FastHttpUser` posting the same JSON and
   parsing the reply; turns per second from Locust's CSV statistics.

The targets (ratios measured in one run): the blocking client >= 0.9x raw httpx2.Client at one
request in flight and with 16 threads; a Locust worker with `QuickchatUser` >= 0.8x the turns per
second of `FastHttpUser`. Absolute numbers vary between machines and runs: compare the ratios.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from bench_server import reply_server

from quickchat_async import Quickchat


TOKEN = "bench-token"  # noqa: S105 -- nginx ignores it
SCENARIO_ID = "bench-scenario"
BODY = {"scenario_id": SCENARIO_ID, "conv_id": "bench-conv", "text": "Hello!"}
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[1]

#: A turn of one thread: `count` requests, `threads` threads at once, sharing what `make` builds.
Row = Callable[[str, int, int], None]


# --- threads --------------------------------------------------------------------------------


def in_threads(threads: int, count: int, work: Callable[[int], None]) -> None:
    """Run `work(n)` in `threads` threads, `count` requests in all."""
    if threads == 1:
        work(count)
        return
    each = [count // threads + (i < count % threads) for i in range(threads)]
    pool = [threading.Thread(target=work, args=(n,)) for n in each]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def raw_httpx2(url: str, count: int, threads: int) -> None:
    limits = httpx2.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx2.Client(limits=limits) as client:

        def work(n: int) -> None:
            for _ in range(n):
                response = client.post(f"{url}/chat", json=BODY, headers=HEADERS)
                assert response.status_code == 200  # the SDK checks the status too
                assert response.json()["reply"]

        in_threads(threads, count, work)


def sdk(kind: str) -> Row:
    def run(url: str, count: int, threads: int) -> None:
        with Quickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, base_url=url, max_connections=threads
        ) as client:

            def work(n: int) -> None:
                conv = client.conversation(conv_id="bench-conv", max_history=1)
                for _ in range(n):
                    if kind == "conversation":
                        assert conv.say("Hello!").html
                    else:
                        assert client.say("Hello!", conv_id="bench-conv").html

            in_threads(threads, count, work)

    return run


THREAD_ROWS: dict[str, Row] = {
    "raw httpx2.Client": raw_httpx2,
    "Quickchat conversation.say": sdk("conversation"),
    "Quickchat.say (stateless)": sdk("say"),
}


def measure_threads(url: str, count: int, threads: int, rounds: int) -> dict[str, float]:
    """Turns per second of each row, best of `rounds` alternating rounds."""
    best = dict.fromkeys(THREAD_ROWS, 0.0)
    for round_number in range(rounds):
        order = list(THREAD_ROWS) if round_number % 2 == 0 else list(reversed(THREAD_ROWS))
        for name in order:
            gc.collect()
            start = time.perf_counter()
            THREAD_ROWS[name](url, count, threads)
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


# --- Locust ---------------------------------------------------------------------------------

LOCUSTFILE = textwrap.dedent(
    """
    from locust import FastHttpUser, constant, task

    from quickchat_async.locust import QuickchatUser

    BODY = {body}
    HEADERS = {headers}


    class Fast(FastHttpUser):
        wait_time = constant(0)

        @task
        def turn(self):
            response = self.client.post("/chat", json=BODY, headers=HEADERS)
            assert response.json()["reply"]


    class Sdk(QuickchatUser):
        wait_time = constant(0)

        def on_start(self):
            self.conv = self.conversation(conv_id="bench-conv", max_history=1, name="chat")

        @task
        def turn(self):
            assert self.conv.say("Hello!").html


    class SdkOnHttpx2(Sdk):
        engine = "httpx2"
    """
)

FAST = "Locust FastHttpUser"
LOCUST_ROWS = {
    FAST: "Fast",
    "QuickchatUser (gevent transport)": "Sdk",
    "QuickchatUser (httpx2 transport)": "SdkOnHttpx2",
}


def locust_rate(url: str, user_class: str, seconds: int, users: int, workdir: Path) -> float:
    """Requests per second of one headless Locust process running `user_class`."""
    prefix = workdir / user_class
    done = subprocess.run(  # noqa: S603 -- locust, from this interpreter
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(workdir / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
            user_class,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "QUICKCHAT_API_TOKEN": TOKEN,
            "QUICKCHAT_SCENARIO_ID": SCENARIO_ID,
        },
    )
    if done.returncode != 0:
        raise RuntimeError(f"locust failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    with prefix.with_name(f"{prefix.name}_stats.csv").open(encoding="utf-8") as file:
        total = next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")
    if int(total["Failure Count"]):
        raise RuntimeError(f"{user_class}: {total['Failure Count']} failures")
    return float(total["Requests/s"])


def measure_locust(url: str, seconds: int, users: int, rounds: int) -> dict[str, float]:
    """Turns per second of each Locust user class, best of `rounds` alternating rounds."""
    best = dict.fromkeys(LOCUST_ROWS, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "locustfile.py").write_text(
            LOCUSTFILE.format(body=repr(BODY), headers=repr(HEADERS)), encoding="utf-8"
        )
        for round_number in range(rounds):
            order = list(LOCUST_ROWS) if round_number % 2 == 0 else list(reversed(LOCUST_ROWS))
            for name in order:
                rate = locust_rate(url, LOCUST_ROWS[name], seconds, users, workdir)
                best[name] = max(best[name], rate)
    return best


# --- the report -----------------------------------------------------------------------------


def table(title: str, rates: dict[str, float], baseline: str) -> None:
    print(f"\n{title}\n")
    print(f"| row | turns/s | x {baseline} |")
    print("| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates[baseline]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    count, rounds, seconds = (300, 1, 5) if args.quick else (3000, 5, 10)

    with reply_server() as (url, server):
        print(f"server: {server}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
        one = measure_threads(url, count, 1, rounds)
        sixteen = measure_threads(url, count, 16, rounds)
        on_locust = measure_locust(url, seconds, 32, 1 if args.quick else 2)

    table("One request in flight", one, "raw httpx2.Client")
    table("16 threads", sixteen, "raw httpx2.Client")
    table("One Locust worker, 32 users that never wait", on_locust, FAST)
    sdk_turn, raw = "Quickchat conversation.say", "raw httpx2.Client"
    targets = [
        ("blocking client, 1 in flight", one, sdk_turn, raw, 0.9),
        ("blocking client, 16 threads", sixteen, sdk_turn, raw, 0.9),
        ("QuickchatUser on Locust", on_locust, "QuickchatUser (gevent transport)", FAST, 0.8),
    ]
    print("\n| target | measured | goal | met |\n| --- | ---: | ---: | --- |")
    results: dict[str, object] = {"one": one, "sixteen": sixteen, "locust": on_locust}
    for label, rates, row, baseline, goal in targets:
        ratio = rates[row] / rates[baseline]
        print(f"| {label} | {ratio:.2f}x | {goal}x | {'yes' if ratio >= goal else 'no'} |")
        results[label] = ratio
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
