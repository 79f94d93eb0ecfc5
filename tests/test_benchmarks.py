"""The benchmark harness (benchmarks/bench.py) runs end to end, so that it cannot rot."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

ROWS = {
    "raw httpx2",
    "raw httpx 0.28",
    "raw aiohttp",
    "SDK default",
    "SDK on httpx 0.28",
    "SDK on aiohttp",
    "openai default",
    "openai on aiohttp",
    "anthropic default",
    "anthropic on aiohttp",
    "requests (seed snippet)",
}


def run_bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`benchmarks/bench.py` run with these arguments by this interpreter, on this checkout."""
    return subprocess.run(  # noqa: S603 -- this interpreter, our own script
        [sys.executable, str(BENCHMARKS / "bench.py"), *arguments],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        timeout=30,
        check=False,
    )


@pytest.fixture(name="bench_server")
def _bench_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """benchmarks/bench_server.py, imported as the benchmark imports it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield importlib.import_module("bench_server")
    sys.modules.pop("bench_server", None)


@pytest.mark.network
class TestReplyServer:
    @pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "nginx"])
    def test_answers_each_api_path_with_its_own_reply(self, bench_server, fallback):
        """Each API's path gets that API's JSON reply, from nginx or from the fallback server."""
        if not fallback and bench_server.nginx_path() is None:
            pytest.skip("nginx is not installed (nox -s bench installs it)")
        with (
            bench_server.reply_server(force_fallback=fallback) as (url, name),
            httpx.Client(timeout=5) as client,
        ):
            assert ("fallback" in name) is fallback
            for path, body in bench_server.REPLIES.items():
                response = client.post(f"{url}{path}", json={"text": "Hello!"})
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/json"
                assert response.json() == json.loads(body)
            assert client.post(f"{url}/elsewhere", json={}).status_code == 404


@pytest.mark.network
@pytest.mark.slow
class TestQuickRun:
    def test_measures_every_row_and_judges_every_target(self, tmp_path):
        """`bench.py --quick` measures every row in one run and prints a verdict per target."""
        results_path = tmp_path / "results.json"
        # One request per worker: what is checked is the run, not its speed.
        done = run_bench("--quick", "--requests", "64", "--json", str(results_path))
        assert done.returncode == 0, done.stderr
        results = json.loads(results_path.read_text(encoding="utf-8"))
        assert set(results["rows"]) == ROWS
        for name, row in results["rows"].items():
            assert row["requests_per_s"] > 0, name
            assert row["engine"], name
            assert f"| {name} | {row['engine']} |" in done.stdout
        assert results["rows"]["SDK on aiohttp"]["engine"] == "AiohttpTransport"
        assert len(results["targets"]) >= 8
        for target in results["targets"]:
            verdict = "yes" if target["met"] else "no"
            assert f"| {target['target']} | {target['measured']} | {verdict} |" in done.stdout
        assert results["bytes_per_conversation"] > 0
        assert results["bytes_per_turn"] > 0

    def test_compares_a_few_rows_by_their_medians(self):
        """`bench.py --compare A B` runs only those rows, and prints B's median against A's."""
        rows = ["raw aiohttp", "Conversation.say, whole history kept"]
        done = run_bench("--compare", *rows, "--requests", "64", "--rounds", "3")
        assert done.returncode == 0, done.stderr
        assert "| 64 requests, 64 in flight, 3 rounds |" in done.stdout
        (first,) = [row for row in done.stdout.splitlines() if row.startswith("| raw aiohttp |")]
        assert first.endswith("| 1.00x |")
        (line,) = [row for row in done.stdout.splitlines() if row.startswith(f"| {rows[1]} |")]
        median, best, ratio = (cell.strip() for cell in line.strip("|").split("|")[1:])
        assert 0 < float(median) <= float(best)
        assert float(ratio.rstrip("x")) > 0
        assert done.stderr.count("round ") == 6  # the two rows, three rounds each

    def test_counts_the_young_passes_of_a_few_rows(self):
        """`bench.py --gc-census A B` prints each row's young garbage-collector passes."""
        rows = ["raw aiohttp", "Conversation.say, whole history kept"]
        done = run_bench("--gc-census", *rows, "--requests", "2000")
        assert done.returncode == 0, done.stderr
        lines = {row.split("|")[1].strip(): row for row in done.stdout.splitlines() if "|" in row}
        cells = [cell.strip() for cell in lines[rows[1]].strip("|").split("|")[1:]]
        young, older = (int(n) for n in cells[0].split("/"))
        assert young > 0  # 2,000 kept turns leave 6,000 counted objects: 8 passes or more
        assert 0 <= older <= young
        assert float(cells[1]) > 0
        assert set(lines) >= {*rows}


def test_the_retry_context_cost_script_times_both_ways_of_making_an_attempt():
    """`benchmarks/retry_context_cost.py` prints an attempt's time outside and inside stamina."""
    done = subprocess.run(  # noqa: S603 -- this interpreter, our own script
        [sys.executable, str(BENCHMARKS / "retry_context_cost.py"), "--attempts", "50"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outside, inside = done.stdout.splitlines()
    assert outside.startswith("an attempt outside a retry context: ")
    assert inside.startswith("an attempt inside stamina.retry_context: ")
    assert float(inside.split(": ")[1].split()[0]) > float(outside.split(": ")[1].split()[0])
