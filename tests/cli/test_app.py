"""The command's entry points: the Typer app, `main`, `python -m`, and the missing extra."""

from __future__ import annotations

import importlib
import runpy
import sys

import pytest

from quickchat_async import cli


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
