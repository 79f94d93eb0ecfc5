"""`quickchat-async say`, in process: one turn, its output, and how its errors read."""

from __future__ import annotations

import json
import socket

import pytest

from quickchat_async import cli
from quickchat_async.cli import say

from .conftest import CANARY, configure, one_error_line


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

    def test_unknown_conv_id_isone_error_line(self, runner):
        """A documented API error prints its type and message on one line, exit status 1."""
        result = runner.invoke(cli.app, ["say", "Hi", "--conv-id", "nope"])
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert line.startswith("error: ConversationNotFoundError: ")
        assert result.stdout == ""

    @pytest.mark.network
    def test_talks_to_the_configured_service(self, runner, monkeypatch, served):
        """With credentials in the environment, say talks to QUICKCHAT_BASE_URL."""
        configure(monkeypatch, served.base_url)
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
        configure(monkeypatch, "https://app.quickchat.ai")
        result = runner.invoke(cli.app, ["say", "Hello", "--base-url", served.base_url])
        assert result.exit_code == 0, result.output
        assert len(served.service.conversations()) == 1

    @pytest.mark.network
    def test_wrong_token_never_printed(self, runner, monkeypatch, served):
        """A refused credential is reported by type, and the token is nowhere in the output."""
        configure(monkeypatch, served.base_url, token=CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        assert one_error_line(result.stderr).startswith("error: AuthenticationError: ")
        assert CANARY not in result.output

    def test_connection_refused_is_one_line(self, runner, monkeypatch):
        """Nothing listening: an APIConnectionError line, without the token."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # closed again when the block ends
        configure(monkeypatch, f"http://127.0.0.1:{port}", token=CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        assert one_error_line(result.stderr).startswith("error: APIConnectionError: ")
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
        line = one_error_line(result.stderr)
        assert line.startswith("error: ValidationError: ")
        assert expected in line
        assert CANARY not in result.output

    def test_unexpected_error_is_one_scrubbed_line(self, runner, monkeypatch):
        """A bug still prints one line, with any configured credential redacted."""

        async def broken(*args, **kwargs):
            raise RuntimeError(f"boom with {CANARY}\nand a second line")

        monkeypatch.setattr(say, "_say_once", broken)
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", CANARY)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert line == "error: unexpected RuntimeError: boom with <redacted> and a second line"

    def test_interrupt_exits_130(self, runner, monkeypatch):
        """Ctrl-C during a turn prints one line and exits with 130."""

        async def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(say, "_say_once", interrupted)
        result = runner.invoke(cli.app, ["say", "Hello"])
        assert result.exit_code == 130
        assert result.stderr == "Interrupted.\n"
