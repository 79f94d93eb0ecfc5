"""`quickchat-async demo`, in process: the scripted tour of the SDK against the emulator."""

from __future__ import annotations

import logging

from quickchat_async import cli


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
