"""serve, aserve, ServerHandle and run: uvicorn on a loopback port, started and stopped cleanly."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

import quickchat_async.emulator
from quickchat_async.emulator import EmulatorService, ServerHandle, aserve, run, serve

from .conftest import TOKEN, current, make_service


ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, *, timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:port accepts connections; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    pytest.fail(f"nothing listens on port {port}")


def chat_status(base_url: str) -> int:
    return httpx.post(f"{base_url}/chat", json=current(), headers=AUTH).status_code


class TestServe:
    def test_free_loopback_port(self):
        """serve() listens on 127.0.0.1, on a port the system chose, and answers at once."""
        server = serve(make_service())
        try:
            assert server.host == "127.0.0.1"
            assert server.port > 0
            assert server.base_url == f"http://127.0.0.1:{server.port}"
            assert server.running
            assert repr(server) == f"<ServerHandle {server.base_url} running>"
            assert chat_status(server.base_url) == 200
            assert server.service.stats().requests == 1
        finally:
            server.stop()

        assert not server.running
        assert repr(server) == f"<ServerHandle {server.base_url} stopped>"
        with pytest.raises(httpx.ConnectError):
            chat_status(server.base_url)

    def test_stop_is_idempotent(self):
        """Stopping a stopped server does nothing."""
        server = serve(make_service())
        server.stop()
        server.stop()

        assert not server.running

    def test_with_statement(self):
        """`with serve(...)` stops the server on exit."""
        with serve(make_service()) as server:
            assert chat_status(server.base_url) == 200

        assert not server.running

    def test_ipv6_loopback(self):
        """An IPv6 loopback host is bracketed in the base URL."""
        try:
            server = serve(make_service(), host="::1")
        except OSError:  # pragma: no cover -- a machine without IPv6
            pytest.skip("no IPv6 loopback here")
        with server:
            assert server.base_url == f"http://[::1]:{server.port}"
            assert chat_status(server.base_url) == 200

    def test_localhost(self):
        """The name localhost is accepted as loopback."""
        with serve(make_service(), host="localhost") as server:
            assert server.base_url == f"http://localhost:{server.port}"
            assert chat_status(server.base_url) == 200

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])  # noqa: S104
    def test_refuses_non_loopback_hosts(self, host):
        """A host that is not loopback is refused before anything is bound."""
        with pytest.raises(ValueError, match="not a loopback address"):
            serve(make_service(), host=host)

    def test_allow_remote_skips_the_check(self):
        """allow_remote=True lets any host through (a loopback one here)."""
        with serve(make_service(), allow_remote=True) as server:
            assert chat_status(server.base_url) == 200

    def test_port_in_use(self):
        """A port that is taken is an OSError, raised in the caller's thread."""
        with serve(make_service()) as server, pytest.raises(OSError, match="in use"):
            serve(make_service(), port=server.port)

    def test_startup_timeout(self, monkeypatch: pytest.MonkeyPatch):
        """A server that is not up within startup_timeout is a RuntimeError, and is stopped."""

        def never_starts(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
            while not self.should_exit:
                time.sleep(0.005)

        monkeypatch.setattr(uvicorn.Server, "run", never_starts)
        threads = threading.active_count()

        with pytest.raises(RuntimeError, match="did not start") as info:
            serve(make_service(), startup_timeout=0.05)

        assert info.value.__cause__ is None
        assert threading.active_count() == threads

    def test_startup_failure_has_its_cause(self, monkeypatch: pytest.MonkeyPatch):
        """A server that fails in its thread is a RuntimeError caused by the failure."""

        def boom(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
            raise OSError("boom")

        monkeypatch.setattr(uvicorn.Server, "run", boom)

        with pytest.raises(RuntimeError, match="did not start") as info:
            serve(make_service())
        assert isinstance(info.value.__cause__, OSError)

    def test_stop_timeout(self):
        """A server that does not stop in time is a TimeoutError; stopping again finishes."""
        server = serve(make_service())

        with pytest.raises(TimeoutError, match="did not stop"):
            server.stop(timeout=0.0)
        server.stop()

        assert not server.running

    def test_concurrent_servers(self):
        """Servers of different services run side by side on their own ports."""
        with serve(make_service()) as one, serve(make_service()) as two:
            assert one.port != two.port
            chat_status(one.base_url)

            assert (one.service.stats().requests, two.service.stats().requests) == (1, 0)


class TestAserve:
    @pytest.mark.anyio
    async def test_async_with(self):
        """`async with await aserve(...)` serves on loopback and stops on exit, on any backend."""
        service = make_service()

        async with await aserve(service) as server:
            assert isinstance(server, ServerHandle)
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                response = await http.post("/chat", json=current(), headers=AUTH)
            assert response.status_code == 200

        assert not server.running

    @pytest.mark.anyio
    async def test_astop_is_idempotent(self):
        """astop() twice is fine."""
        server = await aserve(make_service())
        await server.astop()
        await server.astop()

        assert not server.running


class TestRun:
    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
    def test_serves_until_a_signal_then_returns(self, signum: int):
        """run() gives on_ready the running server, then returns normally on SIGINT or SIGTERM."""
        answers: list[tuple[str, int]] = []

        def on_ready(server: ServerHandle) -> None:
            try:
                answers.append((server.base_url, chat_status(server.base_url)))
            finally:  # never leave run() serving
                os.kill(os.getpid(), signum)

        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        run(make_service(), port=0, log_level="warning", configure_logging=False, on_ready=on_ready)

        [(base_url, status)] = answers
        assert status == 200
        assert base_url.startswith("http://127.0.0.1:")
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
        with pytest.raises(httpx.ConnectError):
            chat_status(base_url)

    def test_refuses_non_loopback_hosts(self):
        """run() refuses a non-loopback host too."""
        with pytest.raises(ValueError, match="not a loopback address"):
            run(EmulatorService(), host="0.0.0.0")  # noqa: S104

    def test_port_in_use(self):
        """A port already bound is an OSError from run() itself; the handlers are put back."""
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError, match="in use"):
                run(EmulatorService(), port=taken.getsockname()[1], configure_logging=False)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers

    def test_a_server_that_stops_without_a_signal_is_an_error(self):
        """If the server ends before any signal, run() raises RuntimeError."""
        with pytest.raises(RuntimeError, match="stopped unexpectedly"):
            run(
                make_service(),
                port=0,
                log_level="warning",
                configure_logging=False,
                on_ready=lambda server: server.stop(),
            )

    def test_an_error_in_on_ready_stops_the_server(self):
        """An exception from on_ready propagates, and the server is stopped."""
        servers: list[ServerHandle] = []

        def fail(server: ServerHandle) -> None:
            servers.append(server)
            raise LookupError("from the hook")

        with pytest.raises(LookupError, match="from the hook"):
            run(make_service(), port=0, configure_logging=False, on_ready=fail)
        assert not servers[0].running

    def test_sigterm_ends_the_process_with_status_0(self):
        """In a process of its own, run() logs where it listens and exits 0 on SIGTERM."""
        port = free_port()
        code = (
            "from quickchat_async.emulator import EmulatorService, run\n"
            f"run(EmulatorService(), port={port}, log_level='info')\n"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with subprocess.Popen(  # noqa: S603 -- our own interpreter and code
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            try:
                wait_until_listening(port)
                process.send_signal(signal.SIGTERM)
                output, _ = process.communicate(timeout=10)
            finally:
                process.kill()

        assert process.returncode == 0, output
        assert f"Quickchat emulator serving at http://127.0.0.1:{port}" in output
        assert "Shutting down" in output


class TestLazyImports:
    def test_served_half_is_importable(self):
        """create_app, serve, aserve, run and ServerHandle come from the package."""
        for name in ("create_app", "serve", "aserve", "run", "ServerHandle"):
            assert callable(getattr(quickchat_async.emulator, name))

    def test_unknown_attribute(self):
        """An unknown name is an AttributeError, as for any module."""
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            _ = quickchat_async.emulator.nope  # type: ignore[attr-defined]

    def test_missing_extra(self, monkeypatch: pytest.MonkeyPatch):
        """Without Starlette and uvicorn, the served half says which extra to install."""
        for name in ("quickchat_async.emulator._asgi", "quickchat_async.emulator._server"):
            monkeypatch.delitem(sys.modules, name)
        for name in list(sys.modules):
            if name.split(".")[0] in {"starlette", "uvicorn"}:
                monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]

        with pytest.raises(ImportError, match=r"pip install 'quickchat-async\[emulator\]'"):
            _ = quickchat_async.emulator.serve

        monkeypatch.undo()
        importlib.import_module("quickchat_async.emulator._server")


class TestLatency:
    def test_replies_on_a_kept_alive_connection_do_not_wait_for_a_delayed_ack(self):
        """Nagle's algorithm is off: a reply is not held back for the client's delayed ACK.

        With it on, every turn after the first on a kept-alive connection took 40 ms or more
        (the reply's body waited for the ACK of its headers); without it, a few milliseconds.
        """
        with serve(make_service()) as server, httpx.Client(base_url=server.base_url) as http:
            took = []
            for _ in range(6):
                start = time.perf_counter()
                response = http.post(
                    "/chat", json=current(), headers={"Authorization": f"Bearer {TOKEN}"}
                )
                took.append(time.perf_counter() - start)
                assert response.status_code == 200
        later = sorted(took[1:])
        assert later[len(later) // 2] < 0.025  # the median: 40 ms a turn with Nagle on
