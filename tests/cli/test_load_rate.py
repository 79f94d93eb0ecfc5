"""`quickchat-async load` with a rate: the client's limiter, in this process or in Redis."""

from __future__ import annotations

import json

from quickchat_async import cli

from .conftest import one_error_line


def summary(output: str) -> dict[str, object]:
    return json.loads(output[output.index("{") :])  # type: ignore[no-any-return]


class TestRate:
    def test_rate_paces_every_request(self, runner):
        """--rate is the client's limiter: 6 requests at 10 a second take half a second or more."""
        result = runner.invoke(cli.app, ["load", "-n", "3", "-m", "2", "--rate", "10", "--json"])

        assert result.exit_code == 0, result.output
        data = summary(result.stdout)
        assert data["turns_ok"] == 6
        assert data["elapsed_s"] >= 0.5 - 0.01  # type: ignore[operator]

    def test_redis_on_trio_is_refused(self, runner):
        """The Redis limiter runs on asyncio only: a usage error before anything runs."""
        result = runner.invoke(
            cli.app,
            ["load", "--rate", "5", "--redis-url", "redis://127.0.0.1:1/0", "--backend", "trio"],
        )

        assert result.exit_code == 2
        assert "asyncio only" in result.output

    def test_redis_without_a_rate_is_refused(self, runner):
        """--redis-url with nothing to count is a usage error."""
        result = runner.invoke(cli.app, ["load", "--redis-url", "redis://127.0.0.1:1/0"])

        assert result.exit_code == 2
        assert "--rate" in result.output

    def test_a_fractional_rate_in_redis_is_one_error_line(self, runner):
        """Redis counts whole requests: --rate 2.5 with --redis-url names per_second, status 1."""
        result = runner.invoke(
            cli.app, ["load", "--rate", "2.5", "--redis-url", "redis://127.0.0.1:1/0"]
        )

        assert result.exit_code == 1
        assert one_error_line(result.stderr).startswith("error: ValidationError: per_second")
