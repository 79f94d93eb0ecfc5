"""Helpers of the example tests: load an example, serve a fake platform API on loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import anyio


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import `examples/<name>` as a module, with examples/ importable as when it runs."""
    if str(EXAMPLES) not in sys.path:  # the bots import their shared `botkit` module
        sys.path.append(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
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
