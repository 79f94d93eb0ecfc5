"""`quickchat-async emulator`, in process: served until a signal, and how its errors read."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time

import httpx
import pytest

import quickchat_async.emulator
from quickchat_async import cli
from quickchat_async.emulator import KnowledgeBase

from .conftest import one_error_line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_when_served(port: int, signum: int, answers: list[httpx.Response]) -> threading.Thread:
    """Once the server thread runs, send one request, then `signum` to this process."""

    def drive() -> None:
        deadline = time.monotonic() + 10
        while not any(t.name == f"quickchat-emulator:{port}" for t in threading.enumerate()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        try:
            answers.append(
                httpx.post(
                    f"http://127.0.0.1:{port}/chat",
                    json={"scenario_id": "agent-7", "text": "Tell me about the tent"},
                    headers={"Authorization": "Bearer tok-7"},
                    timeout=5,
                )
            )
        finally:
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    return thread


@pytest.mark.network
class TestEmulatorCommand:
    @pytest.mark.parametrize(
        ("signum", "faults"),
        [(signal.SIGTERM, ["--fault", "drop_before=0"]), (signal.SIGINT, [])],
        ids=["TERM", "INT"],
    )
    def test_serves_until_a_signal(self, runner, tmp_path, signum, faults):
        """It prints the URL and credentials, answers with its options, stops with status 0."""
        kb = KnowledgeBase.from_dict(
            [{"id": "tent", "title": "The tent", "body": "Our tent sleeps two.", "tags": []}]
        )
        (tmp_path / "kb.json").write_text(json.dumps(kb.to_dict()), "utf-8")
        port = _free_port()
        answers: list[httpx.Response] = []
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        driver = _signal_when_served(port, signum, answers)
        args = ["emulator", "--port", str(port), "--token", "tok-7", "--scenario-id", "agent-7"]
        args += ["--api-key", "key-7", "--kb", str(tmp_path / "kb.json"), "--latency-ms", "1"]
        args += [*faults, "--seed", "3", "--log-level", "warning"]
        result = runner.invoke(cli.app, args)
        driver.join(10)
        assert result.exit_code == 0, result.output
        assert f"serving at http://127.0.0.1:{port} " in result.stdout
        assert "scenario_id  agent-7" in result.stdout
        assert "token        tok-7" in result.stdout
        assert "api_key      key-7" in result.stdout
        assert ("faults       drop_before=0" in result.stdout) == bool(faults)
        assert "Emulator stopped." in result.stderr
        assert answers[0].status_code == 200
        assert answers[0].json()["reply"].startswith("Our tent sleeps two.")
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers

    def test_port_in_use_is_one_line(self, runner):
        """A port already bound is reported on one line, exit status 1."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = runner.invoke(cli.app, ["emulator", "--port", str(port)])
        assert result.exit_code == 1
        assert "Address already in use" in one_error_line(result.stderr)

    def test_remote_host_refused(self, runner):
        """A non-loopback host needs --allow-remote."""
        result = runner.invoke(cli.app, ["emulator", "--host", "0.0.0.0"])  # noqa: S104 -- refused
        assert result.exit_code == 1
        assert "not a loopback address" in one_error_line(result.stderr)

    def test_bad_kb_file(self, runner, tmp_path):
        """An unreadable Knowledge Base file is one error line."""
        (tmp_path / "kb.json").write_text("{", "utf-8")
        result = runner.invoke(cli.app, ["emulator", "--kb", str(tmp_path / "kb.json")])
        assert result.exit_code == 1
        assert "is not valid JSON" in one_error_line(result.stderr)

    @pytest.mark.parametrize(
        ("spec", "message"),
        [("rate_limit", "is not KIND=RATE"), ("nope=0.1", "Unknown fault kind"),
         ("drip=x", "could not convert")],
    )  # fmt: skip
    def test_bad_fault_is_a_usage_error(self, runner, spec, message):
        """--fault takes KIND=RATE with a known kind; otherwise a usage error (status 2)."""
        result = runner.invoke(cli.app, ["emulator", "--fault", spec])
        assert result.exit_code == 2
        assert message in result.stderr
        assert "Traceback" not in result.output

    def test_server_that_stops_by_itself_is_reported(self, runner, monkeypatch):
        """If the server ends before any signal, the command fails with one line, status 1."""
        monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a fresh process
        serve_until_a_signal = quickchat_async.emulator.run

        def run_then_stop(service, **options):
            def on_ready(server):
                options["on_ready"](server)  # the command's banner
                server.stop()  # ...then the server ends, and no signal came

            serve_until_a_signal(service, **{**options, "on_ready": on_ready})

        monkeypatch.setattr("quickchat_async.emulator.run", run_then_stop)
        result = runner.invoke(cli.app, ["emulator", "--port", "0", "--fault", "rate_limit=0.5"])
        assert result.exit_code == 1
        assert one_error_line(result.stderr) == ("error: The emulator server stopped unexpectedly.")
        assert "faults       rate_limit=0.5" in result.stdout
        assert "Emulator stopped." not in result.stderr
