"""The quickchat-async command as a user runs it: real processes, a real terminal, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from quickchat_async import AsyncQuickchat

from .conftest import CANARY


ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\r")


def _command() -> list[str]:
    """The installed console script when there is one next to this Python, else `-m`."""
    script = Path(sys.executable).with_name("quickchat-async")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "quickchat_async"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKCHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200", **extra)
    return env


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own command
        [*_command(), *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=TIMEOUT,
        check=False,
    )


class TestDemo:
    def test_demo_runs_from_the_shell(self):
        """`quickchat-async demo` plays its session and exits 0, with no warnings or traceback."""
        done = _run("demo")
        assert done.returncode == 0, done.stderr
        assert "kb_topic=shipping" in done.stdout
        assert "ScenarioNotFoundError" in done.stdout
        assert done.stderr == ""  # stamina's retry_scheduled warnings would land here

    def test_python_dash_m_demo(self):
        """`python -m quickchat_async demo` is the same command."""
        done = subprocess.run(
            [sys.executable, "-m", "quickchat_async", "demo"],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Hi John!" in done.stdout


class TestSay:
    def test_json_for_scripts(self):
        """`say --json` prints JSON on stdout; the emulator note goes to stderr."""
        done = _run("say", "How can I track my order?", "--json", "--kb-topic", "shipping")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["ord_number"] == 3
        assert data["conv_id"]
        assert data["text"].startswith("When your parcel leaves")
        assert "embedded emulator" in done.stderr


def _read_until(fd: int, pattern: str, buffer: list[str], timeout: float = TIMEOUT) -> str:
    """Read `fd` until `pattern` (a regex) matches the cleaned-up output; return the match."""
    deadline = time.monotonic() + timeout
    while True:
        text = ANSI.sub("", "".join(buffer))
        match = re.search(pattern, text)
        if match:
            return match.group(0)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{pattern!r} never came; got:\n{text}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed
                chunk = b""
            if not chunk:
                pytest.fail(f"{pattern!r} never came before EOF; got:\n{text}")
            buffer.append(chunk.decode("utf-8", "replace"))


@contextlib.contextmanager
def _emulator_process(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`quickchat-async emulator --port 0 ...` in a subprocess, and the base URL it printed."""
    process = subprocess.Popen(  # noqa: S603 -- our own command
        [*_command(), "emulator", "--port", "0", "--log-level", "warning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        url = _read_until(process.stdout.fileno(), r"http://127\.0\.0\.1:\d+", [])
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.network
class TestEmulator:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
    def test_serves_the_sdk_then_stops_cleanly(self, signum):
        """The served emulator answers the SDK, then a signal stops it with exit status 0."""
        with _emulator_process("--token", "tok-e2e", "--scenario-id", "e2e") as (process, url):

            async def turn() -> str:
                async with AsyncQuickchat(token="tok-e2e", scenario_id="e2e", base_url=url) as c:
                    return (await c.say("How can I track my order?")).text

            assert anyio.run(turn).startswith("When your parcel leaves")
            process.send_signal(signum)
            assert process.wait(TIMEOUT) == 0
            assert process.stderr is not None
            assert "Emulator stopped." in process.stderr.read().decode()

    def test_say_with_a_wrong_token_prints_no_token(self):
        """Against the served emulator, a refused canary token is never printed."""
        with _emulator_process() as (process, url):
            done = _run(
                "say",
                "Hello",
                QUICKCHAT_BASE_URL=url,
                QUICKCHAT_API_TOKEN=CANARY,
                QUICKCHAT_SCENARIO_ID="demo",
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT) == 0
        assert done.returncode == 1
        assert done.stderr.startswith("error: AuthenticationError: ")
        assert done.stderr.count("\n") == 1
        assert CANARY not in done.stdout + done.stderr


@contextlib.contextmanager
def _chat_in_a_terminal() -> Iterator[tuple[int, Callable[[], int]]]:
    """`quickchat-async chat` on a pseudo-terminal: its fd, and a function awaiting its status."""
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the command
        command = _command()
        os.execve(command[0], [*command, "chat"], _env())  # noqa: S606 -- our own command
    status: list[int] = []

    def wait() -> int:
        deadline = time.monotonic() + TIMEOUT
        while not status:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status.append(os.waitstatus_to_exitcode(code))
            elif time.monotonic() > deadline:
                pytest.fail(f"quickchat-async chat did not exit within {TIMEOUT:g} s")
            else:
                time.sleep(0.02)
        return status[0]

    try:
        yield fd, wait
    finally:
        if not status:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


class TestChatInATerminal:
    def test_a_session_through_a_pseudo_terminal(self, tmp_path):
        """Turns, /topic, /history, /save and /quit, typed into a real terminal."""
        saved = tmp_path / "saved.json"
        out: list[str] = []
        with _chat_in_a_terminal() as (fd, wait):

            def send(line: str) -> None:
                os.write(fd, line.encode() + b"\n")

            _read_until(fd, r"you> ", out)
            send("Hello")
            _read_until(fd, r"agent> Hi there!", out)
            send("/topic shipping")
            _read_until(fd, r"Started a new conversation on topic shipping", out)
            send("What is your return policy?")
            _read_until(fd, r"agent> You have 30 days", out)
            send("/history")
            _read_until(fd, r"conversation [0-9a-f]+\n", out)
            send(f"/save {saved}")
            _read_until(fd, r"Saved 1 turn\(s\)", out)
            send("/quit")
            assert wait() == 0
        text = ANSI.sub("", "".join(out))
        assert "embedded emulator" in text
        assert "Traceback" not in text
        snapshot = json.loads(saved.read_text("utf-8"))
        assert snapshot["kb_topic"] == "shipping"

    def test_ctrl_c_at_the_prompt_leaves_cleanly(self):
        """Ctrl-C typed at the prompt ends chat with status 0 and no traceback."""
        out: list[str] = []
        with _chat_in_a_terminal() as (fd, wait):
            _read_until(fd, r"you> ", out)
            # The prompt is printed just before input() blocks in readline's select(); CPython's
            # readline checks signals only when select() is interrupted, so a SIGINT landing in
            # between waits for Enter or a second Ctrl-C (2 to 3 runs in 12 when sent at once).
            # A person never types that fast after the prompt: wait as they would.
            time.sleep(0.5)
            os.write(fd, b"\x03")
            assert wait() == 0
            with contextlib.suppress(OSError):  # the terminal may be gone already
                out.append(os.read(fd, 65536).decode("utf-8", "replace"))
        assert "Traceback" not in "".join(out)
