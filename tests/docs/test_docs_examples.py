"""Every ```python block of README.md and docs/*.md runs, page by page, against the emulator.

The examples are written as a user would write them: `AsyncQuickchat(token="...",
scenario_id="...")`, or no arguments at all with `QUICKCHAT_*` set. For the test, they talk to
the emulator served on a loopback port (the `served` fixture of tests/conftest.py):
`QUICKCHAT_BASE_URL` points there, `QUICKCHAT_API_TOKEN` and `QUICKCHAT_SCENARIO_ID` hold the
test credentials, and the emulator also accepts the placeholder `...` as a token, an api_key and
a scenario_id. So the examples go through the SDK's default transport and a real socket,
unchanged.

A page's blocks run in order in one namespace, in a fresh working directory. A block whose first
line is `# not run: <reason>` (a real account, a Redis server...) is only checked for syntax.
New pages are picked up as they are added.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO_ID, TOKEN

from ._blocks import python_blocks, run_page


ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A page that runs longer than this is stuck: dump every thread's stack and stop the run.
PAGE_DEADLINE = 120.0


@pytest.fixture(name="docs_env")
def _docs_env(
    served: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emulator]:
    """The served emulator, `QUICKCHAT_*` pointing at it, and an empty working directory."""
    monkeypatch.setenv("QUICKCHAT_BASE_URL", served.base_url)
    monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)
    monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", SCENARIO_ID)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))  # examples/ importable, as from a checkout
    faulthandler.dump_traceback_later(PAGE_DEADLINE, exit=True, file=sys.__stderr__)
    levels = _logger_levels()
    try:
        yield served
    finally:
        faulthandler.cancel_dump_traceback_later()
        for name in _logger_levels():  # a page may set levels, as users do: put them back
            logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


def _logger_levels() -> dict[str, int]:
    return {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }


class TestDocsExamples:
    @pytest.mark.network
    @pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
    def test_page_examples_run(self, page: Path, docs_env: Emulator) -> None:
        """The page's Python examples run in order against the emulator, without error."""
        blocks = list(python_blocks(page))
        for block in blocks:  # skipped blocks must at least be valid Python
            block.compile()
        runnable = [block for block in blocks if block.skip_reason is None]
        if not runnable:
            pytest.skip(f"{page.name} has no Python example to run")
        assert run_page(blocks) == len(runnable)


class TestHarness:
    def write(self, tmp_path: Path, text: str) -> Path:
        page = tmp_path / "page.md"
        page.write_text(text, encoding="utf-8")
        return page

    def test_finds_python_blocks_with_their_lines(self, tmp_path: Path) -> None:
        """Python blocks are found in order with their first code line; other languages are not."""
        page = self.write(
            tmp_path,
            "# T\n\n```python\nx = 1\n```\n\n```shell\nls\n```\n\n````py\ny = x\n````\n",
        )
        blocks = list(python_blocks(page))
        assert [(b.line, b.source) for b in blocks] == [(4, "x = 1\n"), (12, "y = x\n")]

    def test_not_run_blocks_carry_their_reason(self, tmp_path: Path) -> None:
        """A block opening with `# not run: <reason>` is marked skipped, with the reason."""
        page = self.write(tmp_path, "```python\n# not run: needs Redis\nboom()\n```\n")
        (block,) = python_blocks(page)
        assert block.skip_reason == "needs Redis"

    def test_not_run_needs_a_reason(self, tmp_path: Path) -> None:
        """`# not run` without a reason is refused."""
        page = self.write(tmp_path, "```python\n# not run\nboom()\n```\n")
        with pytest.raises(ValueError, match="say why"):
            list(python_blocks(page))

    def test_unclosed_block_is_an_error(self, tmp_path: Path) -> None:
        """A block without its closing fence is reported, not silently dropped."""
        page = self.write(tmp_path, "```python\nx = 1\n")
        with pytest.raises(ValueError, match="not closed"):
            list(python_blocks(page))

    def test_blocks_share_a_namespace_and_an_event_loop(self, tmp_path: Path) -> None:
        """Later blocks see earlier names, top-level await works, and sync blocks may run a loop."""
        page = self.write(
            tmp_path,
            "```python\nimport anyio\nevent = anyio.Event()\n```\n"
            "```python\nevent.set()\nawait event.wait()\n```\n"
            "```python\nasync def main():\n    return 2\nassert anyio.run(main) == 2\n```\n"
            "```python\n# not run: never\nraise SystemExit\n```\n",
        )
        assert run_page(list(python_blocks(page))) == 3

    def test_errors_point_at_the_page_line(self, tmp_path: Path) -> None:
        """A failing example's traceback names the Markdown file and the line."""
        page = self.write(tmp_path, "text\n\n```python\nx = 1\n1 / 0\n```\n")
        with pytest.raises(ZeroDivisionError) as info:
            run_page(list(python_blocks(page)))
        last = info.traceback[-1]
        assert (Path(str(last.path)), last.lineno + 1) == (page, 5)
