"""Finding the ```python blocks of a Markdown page, and running a page's blocks in order."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio.from_thread
import attrs


#: An opening fence of a Python block: ```python, ```py, ```python3 (``` or ~~~, any length).
_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?:python3?|py)\s*$")
#: The first line of a block that must not run, and why: `# not run: needs a Redis server`.
_NOT_RUN = re.compile(r"^#\s*not run\b:?\s*(?P<reason>.*)$")


@attrs.frozen
class Block:
    """A ```python block of a page.

    Attributes:
        path: the page.
        line: the line of the block's first line of code (1-based).
        source: the code.
        skip_reason: why it is not run, when its first line is `# not run: <reason>`.
    """

    path: Path
    line: int
    source: str
    skip_reason: str | None

    def compile(self) -> Any:
        """Compile it so that tracebacks name the page and its line; top-level await allowed."""
        padded = "\n" * (self.line - 1) + self.source
        return compile(
            padded, str(self.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )


def python_blocks(path: Path) -> Iterator[Block]:
    """The ```python blocks of a Markdown page, in order.

    Raises:
        ValueError: a block is not closed, or says `# not run` without a reason.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _OPEN.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        start = index
        while index < len(lines) and not lines[index].strip().startswith(fence):
            index += 1
        if index == len(lines):
            raise ValueError(f"{path}:{start}: the ```python block is not closed.")
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:index]]
        index += 1
        source = "\n".join(body) + "\n"
        first = next((line.strip() for line in body if line.strip()), "")
        skip = _NOT_RUN.match(first)
        reason = skip["reason"].strip() if skip else None
        if skip and not reason:
            raise ValueError(f"{path}:{start + 1}: say why the block is not run: # not run: <why>")
        yield Block(path=path, line=start + 1, source=source, skip_reason=reason)


def run_page(blocks: list[Block]) -> int:
    """Run a page's blocks in order, in one namespace; returns how many ran.

    A block with top-level `await` runs on an asyncio event loop kept for the whole page (in a
    portal thread, as in `python -m asyncio`); any other block runs in this thread, where it
    may start its own loop (`anyio.run(main)`, `trio.run(main)`, `asyncio.run(main())`).
    """
    namespace: dict[str, Any] = {"__name__": "__main__"}
    ran = 0
    with ExitStack() as stack:
        portal: anyio.from_thread.BlockingPortal | None = None
        for block in blocks:
            if block.skip_reason is not None:
                continue
            code = block.compile()
            if code.co_flags & inspect.CO_COROUTINE:
                if portal is None:
                    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))

                async def run(code: Any = code) -> None:
                    await eval(code, namespace)  # noqa: S307 -- the docs' own code

                portal.call(run)
            else:
                exec(code, namespace)  # noqa: S102 -- the docs' own code
            ran += 1
    return ran
