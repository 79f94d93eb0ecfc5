"""`quickchat-async chat`, in process: turns and slash commands read from stdin."""

from __future__ import annotations

import json

import pytest
import rich.console

from quickchat_async import cli

from .conftest import CANARY, configure, one_error_line


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
        """A topic can change value; a change the SDK refuses starts a new conversation."""
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
        assert "Started a new conversation without a topic." in out
        assert "No topic." in out
        assert "Started a new conversation on topic technical." in out
        assert out.count("(conversation ") == 2
        assert "ValidationError: kb_topic cannot be removed from a started conversation" in (
            result.stderr
        )
        assert "ValidationError: kb_topic cannot be introduced after a conversation" in (
            result.stderr
        )

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
        configure(monkeypatch, served.base_url)
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
        assert one_error_line(result.stderr).startswith("error: ValidationError: ")
        assert CANARY not in result.output
