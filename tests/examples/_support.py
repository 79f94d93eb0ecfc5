"""Helpers of the example tests: load an example, serve a fake platform API on loopback."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import anyio
import pytest


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def framework(name: str) -> ModuleType:
    """Import a bot's framework, or skip the test without it; in CI it must be there."""
    if os.environ.get("CI"):  # `nox -s tests` installs the examples dependency group
        return importlib.import_module(name)
    return pytest.importorskip(
        name, reason=f"{name} is not installed: pip install --group examples (see pyproject.toml)"
    )


def load_example(name: str) -> ModuleType:
    """Import `examples/<name>` as a module, with examples/ importable as when it runs."""
    if str(EXAMPLES) not in sys.path:  # the bots import their shared `botkit` module
        sys.path.append(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves FastAPI's annotations through it
    spec.loader.exec_module(module)
    return module


def loopback_socket() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1."""
    return socket.create_server(("127.0.0.1", 0))


@contextlib.asynccontextmanager
async def serving(app: object) -> AsyncIterator[str]:
    """An aiohttp `web.Application` served on a free loopback port; yields its base URL.

    Its start-up hooks run on entry and its clean-up hooks on exit, as under `web.run_app`.
    """
    from aiohttp import web  # noqa: PLC0415 -- only the tests that need it have it

    assert isinstance(app, web.Application)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    sock = loopback_socket()
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


async def until(condition: Callable[[], object], *, within: float = 10.0) -> None:
    """Wait until `condition()` is true; fail after `within` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 -- the fakes record plain lists
            await anyio.sleep(0.01)


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago, for a process that binds it itself."""
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running(name: str, env: dict[str, str]) -> AsyncIterator[list[str]]:
    """`python examples/<name>` as a user runs it; on exit, Ctrl-C, and it must exit cleanly.

    Yields the lines of its stderr, read as they come (the log, and the emulator notice).
    """
    process = await anyio.open_process(
        [sys.executable, str(EXAMPLES / name)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    lines: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines.extend(line.decode(errors="replace") for line in complete)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stderr)
            yield lines
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                returncode = await process.wait()
        assert returncode == 0, "\n".join(lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def wait_listening(port: int, *, within: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    with anyio.fail_after(within):
        while True:
            with contextlib.suppress(OSError):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.aclose()
                return
            await anyio.sleep(0.05)
