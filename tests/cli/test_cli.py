"""The quickchat-async command, in process: demo, say, chat, emulator, and how errors read."""

from __future__ import annotations

import importlib
import json
import logging
import os
import runpy
import signal
import socket
import sys
import threading
import time

import httpx
import pytest
import rich.console

from quickchat_async import cli
from quickchat_async.emulator import KnowledgeBase

from .conftest import CANARY


def _one_error_line(stderr: str) -> str:
    """The single `error:` line of a failed command; there is no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _configure(monkeypatch, base_url: str, token: str = "demo-token") -> None:  # noqa: S107
    monkeypatch.setenv("QUICKCHAT_API_TOKEN", token)
    monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "demo")
    monkeypatch.setenv("QUICKCHAT_BASE_URL", base_url)


class TestDemo:
    def test_plays_the_scripted_session(self, runner):
        """The demo shows conv_id, two topics, HTML as text, context, a retry and typed errors."""
        result = runner.invoke(cli.app, ["demo"])
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "conv_id " in out
        assert "captured; ord_number 3" in out
        assert "ord_number 5" in out
        assert "(kb_topic=billing)" in out
        assert "(kb_topic=shipping)" in out
        assert "we refund the full price" in out  # billing's answer to the return question
        assert "You have 30 days to send items back" in out  # shipping's answer to it
        assert "<b>Visa</b>" in out  # the HTML as sent...
        assert "agent> We accept Visa, Mastercard" in out  # ...and as text
        assert "Hi John!" in out
        assert 'message_context="The user\'s name is John."' in out
        assert "1 x 429 then a 200" in out
        assert "ScenarioNotFoundError (HTTP 404): No implementation found" in out
        assert "ValidationError, before sending" in out

    def test_prints_no_retry_warnings(self, runner, caplog):
        """stamina's retry_scheduled lines are not logged, though the demo retries once."""
        with caplog.at_level(logging.DEBUG):
            result = runner.invoke(cli.app, ["demo"])
        assert result.exit_code == 0
        assert [r for r in caplog.records if r.name == "stamina"] == []
        assert "retry_scheduled" not in result.output
        assert result.stderr == ""

    def test_verbose_logs_the_retry(self, runner):
        """--verbose configures logging: the SDK's own retry line reaches stderr."""
        result = runner.invoke(cli.app, ["--verbose", "demo"])
        assert result.exit_code == 0
        assert "Retrying the Chat request" in result.stderr
        assert logging.getLogger().level == logging.INFO


class TestSay:
    def test_uses_the_emulator_when_nothing_is_configured(self, runner):
        """With no QUICKCHAT_* variable, the reply comes from the emulator, as stderr says."""
        result = runner.invoke(cli.app, ["say", "How can I track my order?"])
        assert result.exit_code == 0, result.output
        assert "embedded emulator" in result.stderr
        assert result.stdout.startswith("When your parcel leaves the warehouse")
        assert "<br>" not in result.stdout
        assert "conv_id " in result.stderr

    def test_json_reply(self, runner):
        """--json prints the reply's fields as one JSON object on stdout."""
        result = runner.invoke(cli.app, ["say", "Hello", "--json"])
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert set(data) == {"text", "html", "conv_id", "ord_number", "src"}
        assert data["ord_number"] == 3
        assert "<br>" in data["html"]
        assert "\n" in data["text"]

    def test_kb_topic_and_context_are_sent(self, runner):
        """--kb-topic filters the answer; --context's name opens the reply."""
        args = ["say", "What is your return policy?", "--json", "--context", "My name is Ann."]
        billing = json.loads(runner.invoke(cli.app, [*args, "--kb-topic", "billing"]).stdout)
        shipping = json.loads(runner.invoke(cli.app, [*args, "--kb-topic", "shipping"]).stdout)
        assert billing["text"].startswith("Hi Ann! Once your return reaches our warehouse")
        assert shipping["text"].startswith("Hi Ann! You have 30 days")

    def test_unknown_conv_id_is_one_error_line(self, runner):
        """A documented API error prints its type and message on one line, exit status 1."""
        result = runner.invoke(cli.app, ["say", "Hi", "--conv-id", "nope"])
        assert result.exit_code == 1
        line = _one_error_line(result.stderr)
        assert line.startswith("error: ConversationNotFoundError: ")
        assert result.stdout == ""

    @pytest.mark.network
    def test_talks_to_the_configured_service(self, runner, monkeypatch, served):
        """With credentials in the environment, say talks to QUICKCHAT_BASE_URL."""
        _configure(monkeypatch, served.base_url)
        result = runner.invoke(cli.app, ["say", "Hello", "--json"])
        assert result.exit_code == 0, result.output
        assert "emulator" not in result.stderr
        conv_id = json.loads(result.stdout)["conv_id"]
        assert served.service.user_messages(conv_id) == ("Hello",)
        again = runner.invoke(cli.app, ["say", "Thanks", "--conv-id", conv_id, "--json"])
        assert json.loads(again.stdout)["ord_number"] == 5

    @pytest.mark.network
    def test_base_url_option_wins(self, runner, monkeypatch, served):
        """--base-url overrides QUICKCHAT_BASE_URL."""
        _configure(monkeypatch, "https://app.quickchat.ai")
        result = runner.invoke(cli.app, ["say", "Hello", "--base-url", served.base_url])
        assert result.exit_code == 0, result.output
        assert len(served.service.conversations()) == 1

    @pytest.mark.network
    def test_wrong_token_never_printed(self, runner, monkeypatch, served):
        """A refused credential is reported by type, and the token is nowhere in the output."""
        _configure(monkeypatch, served.base_url, token=CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        assert _one_error_line(result.stderr).startswith("error: AuthenticationError: ")
        assert CANARY not in result.output

    def test_connection_refused_is_one_line(self, runner, monkeypatch):
        """Nothing listening: an APIConnectionError line, without the token."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # closed again when the block ends
        _configure(monkeypatch, f"http://127.0.0.1:{port}", token=CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        assert _one_error_line(result.stderr).startswith("error: APIConnectionError: ")
        assert CANARY not in result.output

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({"QUICKCHAT_API_TOKEN": CANARY}, "scenario_id is required"),
            ({"QUICKCHAT_SCENARIO_ID": "demo"}, "No credential"),
            (
                {"QUICKCHAT_API_TOKEN": CANARY, "QUICKCHAT_SCENARIO_ID": "demo",
                 "QUICKCHAT_BASE_URL": "http://example.com"},
                "clear text",
            ),
        ],
    )  # fmt: skip
    def test_partial_configuration_is_an_error(self, runner, monkeypatch, env, expected):
        """Some QUICKCHAT_* variables but not a usable set: a ValidationError line."""
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        line = _one_error_line(result.stderr)
        assert line.startswith("error: ValidationError: ")
        assert expected in line
        assert CANARY not in result.output

    def test_unexpected_error_is_one_scrubbed_line(self, runner, monkeypatch):
        """A bug still prints one line, with any configured credential redacted."""

        async def broken(*args, **kwargs):
            raise RuntimeError(f"boom with {CANARY}\nand a second line")

        monkeypatch.setattr(cli, "_say_once", broken)
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        line = _one_error_line(result.stderr)
        assert line == "error: unexpected RuntimeError: boom with <redacted> and a second line"

    def test_interrupt_exits_130(self, runner, monkeypatch):
        """Ctrl-C during a turn prints one line and exits with 130."""

        async def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(cli, "_say_once", interrupted)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 130
        assert result.stderr == "Interrupted.\n"


def _chat(runner, lines, *args):
    return runner.invoke(cli.app, ["chat", *args], input="".join(f"{line}\n" for line in lines))


class TestChat:
    def test_turns_and_slash_commands(self, runner, tmp_path):
        """A session: two turns, the topic, the history, a save, context, then /quit."""
        saved = tmp_path / "conv.json"
        result = _chat(
            runner,
            [
                "Hello",
                "",
                "/topic",
                "What is your return policy?",
                "/history",
                f"/save {saved}",
                "/context The user's name is John.",
                "Hello",
                "/quit",
                "never read",
            ],
        )
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "Talking to the embedded emulator" in out
        assert out.count("agent> ") == 3
        assert "(conversation " in out
        assert "No topic." in out
        assert "we refund the full price" in out
        assert "│ Hello" in out
        assert "confirmed" in out
        assert "Saved 2 turn(s)" in out
        assert "agent> Hi John!" in out
        snapshot = json.loads(saved.read_text("utf-8"))
        assert len(snapshot["history"]) == 2

    def test_topic_changes(self, runner):
        """A topic can change value; gaining or losing one starts a new conversation."""
        result = _chat(
            runner,
            [
                "/topic billing",  # not started yet: the same conversation takes it
                "What is your return policy?",
                "/topic shipping",  # same conversation, another value
                "What is your return policy?",
                "/topic",
                "/topic none",  # started with a topic: a new conversation without
                "/topic",
                "Hello",
                "/topic technical",  # started without: a new conversation with one
            ],
        )
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "Topic: billing." in out
        assert "Topic: shipping." in out
        assert "we refund the full price" in out
        assert "You have 30 days" in out
        assert "Topic: shipping\n" in out
        assert "started a new one without a topic." in out
        assert "No topic." in out
        assert "started a new one on topic technical." in out
        assert out.count("(conversation ") == 2

    def test_load_continues_a_saved_conversation(self, runner, tmp_path):
        """/load resumes the snapshot; the emulator of another run does not know its conv_id."""
        saved = tmp_path / "conv.json"
        first = _chat(runner, ["Hello", f"/save {saved}"])
        assert first.exit_code == 0
        result = _chat(runner, [f"/load {saved}", "/history", "Hello again", "/new", "Hi"])
        assert result.exit_code == 0, result.output
        assert "Loaded conversation" in result.stdout
        assert "(1 turn(s))" in result.stdout
        assert "error: ConversationNotFoundError: " in result.stderr  # the turn failed...
        assert result.stdout.count("agent> ") == 1  # ...and the REPL went on
        assert "New conversation." in result.stdout

    def test_bad_commands_and_files(self, runner, tmp_path):
        """Mistakes print a warning or an error and the REPL goes on."""
        (tmp_path / "list.json").write_text("[]", "utf-8")
        (tmp_path / "junk.json").write_text("{not json", "utf-8")
        (tmp_path / "wrong.json").write_text('{"kind": "something else"}', "utf-8")
        result = _chat(
            runner,
            [
                "/bogus",
                "/save",
                "/load",
                f"/save {tmp_path}",
                f"/load {tmp_path / 'missing.json'}",
                f"/load {tmp_path / 'list.json'}",
                f"/load {tmp_path / 'junk.json'}",
                f"/load {tmp_path / 'wrong.json'}",
                "/history",
                "/context",
                "/help",
                "/exit",
            ],
        )
        assert result.exit_code == 0, result.output
        err = result.stderr
        assert "Unknown command /bogus; /help lists them." in err
        assert "Usage: /save FILE" in err
        assert "Usage: /load FILE" in err
        assert err.count("error: ") == 5
        assert "Is a directory" in err
        assert "No such file or directory" in err
        assert "does not hold a conversation snapshot" in err
        assert "No turns yet." in result.stdout
        assert "No context for the next message." in result.stdout
        assert "/topic [NAME|none]" in result.stdout

    def test_end_of_input_leaves(self, runner):
        """EOF (Ctrl-D) ends the session cleanly."""
        result = _chat(runner, ["Hello"])
        assert result.exit_code == 0
        assert result.stdout.count("agent> ") == 1

    def test_ctrl_c_at_the_prompt_leaves(self, runner, monkeypatch):
        """Ctrl-C at the prompt ends the session cleanly."""

        def interrupt(self, prompt=""):
            raise KeyboardInterrupt

        monkeypatch.setattr(rich.console.Console, "input", interrupt)
        result = runner.invoke(cli.app, ["chat"])
        assert result.exit_code == 0

    def test_kb_topic_option(self, runner):
        """--kb-topic starts the conversation on that topic."""
        result = _chat(runner, ["/topic", "What is your return policy?"], "--kb-topic", "shipping")
        assert "Topic: shipping" in result.stdout
        assert "You have 30 days" in result.stdout

    @pytest.mark.network
    def test_talks_to_the_configured_service(self, runner, monkeypatch, served):
        """With credentials set, chat names the service and its messages reach it."""
        _configure(monkeypatch, served.base_url)
        result = _chat(runner, ["Hello", "/quit"])
        assert result.exit_code == 0, result.output
        assert f"Talking to {served.base_url} (scenario demo)" in result.stdout
        [conversation] = served.service.conversations()
        assert served.service.user_messages(conversation.conv_id) == ("Hello",)

    def test_bad_configuration_is_one_line(self, runner, monkeypatch):
        """A configuration the client refuses ends chat with one error line."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", CANARY)
        result = _chat(runner, ["Hello"])
        assert result.exit_code == 1
        assert _one_error_line(result.stderr).startswith("error: ValidationError: ")
        assert CANARY not in result.output


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
        assert "Address already in use" in _one_error_line(result.stderr)

    def test_remote_host_refused(self, runner):
        """A non-loopback host needs --allow-remote."""
        result = runner.invoke(cli.app, ["emulator", "--host", "0.0.0.0"])  # noqa: S104 -- refused
        assert result.exit_code == 1
        assert "not a loopback address" in _one_error_line(result.stderr)

    def test_bad_kb_file(self, runner, tmp_path):
        """An unreadable Knowledge Base file is one error line."""
        (tmp_path / "kb.json").write_text("{", "utf-8")
        result = runner.invoke(cli.app, ["emulator", "--kb", str(tmp_path / "kb.json")])
        assert result.exit_code == 1
        assert "is not valid JSON" in _one_error_line(result.stderr)

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

    def test_server_that_dies_is_reported(self, runner, monkeypatch):
        """If the server thread ends by itself, the command fails with one line."""
        monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a fresh process

        class DeadServer:
            base_url = "http://127.0.0.1:1"
            running = False

            def stop(self):
                pass

        monkeypatch.setattr("quickchat_async.emulator.serve", lambda *a, **k: DeadServer())
        result = runner.invoke(cli.app, ["emulator", "--fault", "rate_limit=0.5"])
        assert result.exit_code == 1
        assert _one_error_line(result.stderr) == (
            "error: The emulator server stopped unexpectedly."
        )
        assert "faults       rate_limit=0.5" in result.stdout


class TestEntryPoints:
    def test_main_runs_the_app(self, monkeypatch, capsys):
        """main() is the console script: it parses sys.argv."""
        monkeypatch.setattr(sys, "argv", ["quickchat-async", "--version"])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith("quickchat-async ")

    def test_python_dash_m(self, monkeypatch, capsys):
        """`python -m quickchat_async` runs the same command."""
        monkeypatch.setattr(sys, "argv", ["quickchat_async", "--help"])
        with pytest.raises(SystemExit) as exc:
            runpy.run_module("quickchat_async", run_name="__main__")
        assert exc.value.code == 0
        out = capsys.readouterr().out
        for command in ("demo", "chat", "say", "emulator", "load"):
            assert command in out

    @pytest.mark.parametrize("missing", ["typer", "rich.console"])
    def test_without_the_extra(self, monkeypatch, capsys, missing):
        """Without typer or rich, importing the CLI says what to install and exits 1."""
        monkeypatch.setitem(sys.modules, missing, None)
        monkeypatch.delitem(sys.modules, "quickchat_async.cli")
        with pytest.raises(SystemExit) as exc:
            importlib.import_module("quickchat_async.cli")
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert err == (
            "quickchat-async: the command line needs typer and rich: "
            'pip install "quickchat-async[cli]"\n'
        )

    def test_importing_main_runs_nothing(self, monkeypatch, capsys):
        """Importing quickchat_async.__main__ (not running it) does not start the command."""
        monkeypatch.delitem(sys.modules, "quickchat_async.__main__", raising=False)
        importlib.import_module("quickchat_async.__main__")
        assert capsys.readouterr() == ("", "")

    def test_app_is_a_typer_app(self):
        """Other modules can add commands to `cli.app`."""
        assert cli.app.registered_commands
        assert {c.name or c.callback.__name__ for c in cli.app.registered_commands} >= {
            "demo",
            "chat",
            "say",
            "emulator",
            "load",
        }

    def test_load_is_a_command_of_the_cli(self, runner):
        """`quickchat-async load` runs a small load against the emulator and prints JSON."""
        result = runner.invoke(cli.app, ["load", "-n", "4", "-m", "2", "-c", "2", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout[result.stdout.index("{") :])
        assert data["turns_ok"] == 8
