"""The blocking client's benchmark (benchmarks/bench_sync.py) runs end to end, so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

if importlib.util.find_spec("locust") is None:  # never imported here: it monkey-patches
    pytest.skip(
        "Locust is not installed: pip install 'quickchat-async[locust]'", allow_module_level=True
    )


@pytest.mark.network
@pytest.mark.slow
def test_quick_run_measures_every_ratio(tmp_path):
    """`bench_sync.py --quick` measures the threads and the Locust rows, and each target's ratio."""
    results_path = tmp_path / "results.json"
    done = subprocess.run(  # noqa: S603 -- this interpreter, our own script
        [sys.executable, str(BENCHMARKS / "bench_sync.py"), "--quick", "--json", str(results_path)],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(results_path.read_text(encoding="utf-8"))
    for section in ("one", "sixteen", "locust"):
        assert all(rate > 0 for rate in results[section].values()), section
    for target in (
        "blocking client, 1 in flight",
        "blocking client, 16 threads",
        "QuickchatUser on Locust",
    ):
        assert results[target] > 0
        assert f"| {target} | {results[target]:.2f}x |" in done.stdout
