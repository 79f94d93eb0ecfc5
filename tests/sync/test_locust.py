"""QuickchatUser on Locust's distributed mode: a master and two workers on 127.0.0.1.

The example's visitors (`locust_workers.py`) talk to the emulator served here, for a few seconds,
headless; the master's CSV statistics must show turns from both workers and no failure, and the
emulator must have received each message once.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from quickchat_async.testing import Emulator

from .conftest import SCENARIO, TOKEN, gevent_python


if importlib.util.find_spec("locust") is None:  # never imported here: it monkey-patches
    pytest.skip(
        "Locust is not installed: pip install 'quickchat-async[locust]'", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locust_workers.py")
EXAMPLE = ROOT / "examples" / "locustfile.py"
#: The run's length; the whole test is bounded at a few times that.
RUN_SECONDS = 6


def example_scripts() -> dict[str, list[str]]:
    """The example's SCRIPTS, read without importing it: importing Locust monkey-patches."""
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SCRIPTS":
            return ast.literal_eval(node.value)  # type: ignore[no-any-return]
    raise AssertionError("examples/locustfile.py lost its SCRIPTS")


SCRIPTS = example_scripts()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="locust_env")
def _locust_env(served: Emulator) -> dict[str, str]:
    """Locust's environment: the canary credentials, and the checkout importable."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "QUICKCHAT_API_TOKEN": TOKEN,
        "QUICKCHAT_SCENARIO_ID": SCENARIO.scenario_id,
    }
    env.pop("QUICKCHAT_API_KEY", None)
    env.pop("QUICKCHAT_BASE_URL", None)
    return env


@pytest.fixture(name="processes")
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(
    processes: list[subprocess.Popen[bytes]], env: dict[str, str], log: Path, *args: str
) -> None:
    """Start locust with `args`, its output going to `log` (a pipe could fill and stall it)."""
    with log.open("wb") as output:
        processes.append(
            subprocess.Popen(  # noqa: S603 -- locust, from this interpreter
                gevent_python("-m", "locust", "-f", str(LOCUSTFILE), *args),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        )


@pytest.mark.network
@pytest.mark.slow
class TestDistributedRun:
    def test_master_and_two_workers(self, served: Emulator, locust_env, processes, tmp_path):
        """Both workers send turns, none fails, and the emulator got each message once."""
        port = str(free_port())
        csv_prefix = tmp_path / "run"
        start(
            processes,
            locust_env,
            tmp_path / "master.log",
            "--master",
            "--headless",
            "--master-bind-host=127.0.0.1",
            f"--master-bind-port={port}",
            "--expect-workers=2",
            "--expect-workers-max-wait=30",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            f"{RUN_SECONDS}s",
            f"--host={served.base_url}",
            f"--csv={csv_prefix}",
            "--only-summary",
        )
        for number in range(2):
            start(
                processes,
                locust_env,
                tmp_path / f"worker-{number}.log",
                "--worker",
                "--master-host=127.0.0.1",
                f"--master-port={port}",
            )
        master = processes[0]
        try:
            master.wait(timeout=RUN_SECONDS + 40)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        output = (tmp_path / "master.log").read_text(encoding="utf-8", errors="replace")
        assert master.returncode == 0, output[-3000:]
        for worker in processes[1:]:
            worker.wait(30)

        with (csv_prefix.parent / f"{csv_prefix.name}_stats.csv").open(encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        turns = {row["Name"]: row for row in rows if row["Type"] == "chat"}
        total = next(row for row in rows if row["Name"] == "Aggregated")
        workers = {name.rsplit("(worker ", 1)[1].rstrip(")") for name in turns}
        assert workers == {"0", "1"}, sorted(turns)
        assert {name.split(" (", 1)[0] for name in turns} <= set(SCRIPTS)
        assert int(total["Failure Count"]) == 0, output[-3000:]
        reported = int(total["Request Count"])
        assert reported > 12

        # Each conversation on the server is its script's first turns, each message once.
        recorded = 0
        for conversation in served.conversations():
            said = served.user_messages(conversation.conv_id)
            topic = served.messages(conversation.conv_id)[1].client_metadata["kb_topic"]
            assert list(said) == SCRIPTS[topic][: len(said)], said
            recorded += len(said)
        # A turn cut off by the end of the run may reach the server and not Locust's count.
        assert reported <= recorded <= reported + 6
