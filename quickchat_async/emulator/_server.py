"""Serving the emulator with uvicorn: in a background thread, or in the foreground.

`serve()` binds the socket in the caller's thread (so the port is known, and a bind error is
raised there), then runs uvicorn in a daemon thread with its own asyncio loop: the caller may
be synchronous, on asyncio or on trio, and its loop is never shared. `ServerHandle.stop()` asks
uvicorn to shut down and joins the thread, within a bound.

`run()` serves in the foreground, for the `quickchat-async emulator` command: it starts the
server as `serve()` does, hands the running server to an `on_ready` hook (to print where it
listens), then waits in the main thread until SIGINT or SIGTERM and shuts the server down.

Both refuse to listen on anything but a loopback address unless `allow_remote=True`: the
emulator has no real authentication, and its `/_emulator` routes none at all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType, TracebackType
from typing import Literal, final

import anyio.to_thread
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ._asgi import create_app
from ._service import EmulatorService


__all__ = ["ServerHandle", "aserve", "run", "serve"]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
HTTPImplementation = Literal["auto", "h11", "httptools"]


def _check_host(host: str, *, allow_remote: bool) -> None:
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"Refusing to serve the emulator on {host!r}, which is not a loopback address: it "
            "has no real authentication. Pass allow_remote=True if you mean it."
        )


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, its connections without Nagle's algorithm.

    asyncio turns Nagle off only on sockets made with protocol IPPROTO_TCP, and a socket from
    `socket.create_server` has protocol 0: a reply written as headers then body would wait for
    the client's delayed ACK, 40 ms a turn on a kept-alive connection. Accepted connections
    take the option from the listening socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _config(
    service: EmulatorService,
    *,
    host: str,
    port: int,
    log_level: LogLevel,
    timeout_keep_alive: int,
    timeout_graceful_shutdown: int | None,
    limit_concurrency: int | None,
    http: HTTPImplementation,
    configure_logging: bool,
) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        lifespan="off",
        loop="asyncio",
        http=http,
        log_level=log_level,
        log_config=LOGGING_CONFIG if configure_logging else None,
        access_log=log_level in {"info", "debug", "trace"},
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        limit_concurrency=limit_concurrency,
        server_header=False,
    )


def _start(server: uvicorn.Server, sock: socket.socket, timeout: float) -> threading.Thread:
    """Run `server` on `sock` in a daemon thread; return it once the server accepts connections.

    Raises:
        RuntimeError: the server failed or did not start within `timeout` seconds.
    """
    errors: list[BaseException] = []

    def run_server() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 -- reported in the caller's thread
            errors.append(exc)

    port = sock.getsockname()[1]
    thread = threading.Thread(target=run_server, name=f"quickchat-emulator:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            sock.close()
            cause = errors[0] if errors else None
            raise RuntimeError("The emulator server did not start.") from cause
        time.sleep(0.01)
    return thread


@final
class ServerHandle:
    """A running emulator server, made by `serve`; stop it with `stop()`, `with` or `async with`.

    Attributes:
        service: the service it serves; inspect or script it directly.
        base_url: where it listens, such as `http://127.0.0.1:54321` (the Chat endpoint is
            `{base_url}/chat`).
        host: the host it listens on.
        port: the port it listens on (the one the system chose, for port 0).
    """

    def __init__(
        self,
        service: EmulatorService,
        *,
        server: uvicorn.Server,
        sock: socket.socket,
        thread: threading.Thread,
        host: str,
    ) -> None:
        self.service = service
        self.host = host
        self.port: int = sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{url_host}:{self.port}"
        self._server = server
        self._socket = sock
        self._thread = thread

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ServerHandle {self.base_url} {state}>"

    @property
    def running(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down and join its thread; does nothing if it already stopped.

        Open connections are closed; requests in flight get `timeout_graceful_shutdown`
        seconds to finish, then are cancelled.

        Raises:
            TimeoutError: the thread did not end within `timeout` seconds.
        """
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout / 2)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout / 2)
        self._socket.close()
        if self._thread.is_alive():
            raise TimeoutError(f"The emulator server at {self.base_url} did not stop.")

    async def astop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- a thread join's bound
        """`stop()`, from async code (in a worker thread, so the event loop is not blocked)."""
        await anyio.to_thread.run_sync(self.stop, timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ServerHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()


def _launch(service: EmulatorService, config: uvicorn.Config, timeout: float) -> ServerHandle:
    """Bind the socket here (a bind error is raised in the caller's thread), serve in a thread."""
    server = uvicorn.Server(config)
    sock = _bind(config.host, config.port)
    thread = _start(server, sock, timeout)
    return ServerHandle(service, server=server, sock=sock, thread=thread, host=config.host)


def serve(
    service: EmulatorService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    timeout_keep_alive: int = 5,
    timeout_graceful_shutdown: int | None = 1,
    limit_concurrency: int | None = None,
    http: HTTPImplementation = "auto",
    log_level: LogLevel = "warning",
    startup_timeout: float = 10.0,
) -> ServerHandle:
    """Serve the emulator in a background thread; returns once it accepts connections.

    Args:
        service: what to serve.
        host: the address to listen on; loopback only, unless `allow_remote`.
        port: the port; 0 picks a free one (see `ServerHandle.port`).
        allow_remote: allow a non-loopback `host`.
        timeout_keep_alive: seconds an idle keep-alive connection stays open.
        timeout_graceful_shutdown: seconds requests in flight get when stopping (None: wait).
        limit_concurrency: answer 503 beyond this many concurrent connections.
        http: uvicorn's HTTP implementation.
        log_level: uvicorn's log level (quiet by default; logging is not reconfigured).
        startup_timeout: seconds to wait for the server to start.

    Raises:
        ValueError: `host` is not a loopback address and `allow_remote` is False.
        OSError: the address cannot be bound.
        RuntimeError: the server did not start.
    """
    _check_host(host, allow_remote=allow_remote)
    config = _config(
        service,
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        limit_concurrency=limit_concurrency,
        http=http,
        configure_logging=False,
    )
    return _launch(service, config, startup_timeout)


async def aserve(
    service: EmulatorService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    timeout_keep_alive: int = 5,
    timeout_graceful_shutdown: int | None = 1,
    limit_concurrency: int | None = None,
    http: HTTPImplementation = "auto",
    log_level: LogLevel = "warning",
    startup_timeout: float = 10.0,
) -> ServerHandle:
    """Start a server as `serve` does, from async code, without blocking the event loop.

    Use it as `async with await aserve(service) as server: ...`.
    """

    def start() -> ServerHandle:
        return serve(
            service,
            host=host,
            port=port,
            allow_remote=allow_remote,
            timeout_keep_alive=timeout_keep_alive,
            timeout_graceful_shutdown=timeout_graceful_shutdown,
            limit_concurrency=limit_concurrency,
            http=http,
            log_level=log_level,
            startup_timeout=startup_timeout,
        )

    return await anyio.to_thread.run_sync(start)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Generator[None]:
    """Set `stop` on SIGINT or SIGTERM; put the previous handlers back afterwards."""

    def handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 -- signal's API
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def _log_serving(handle: ServerHandle) -> None:
    """Say where the server listens, on uvicorn's own log, as its command line does."""
    logging.getLogger("uvicorn.error").info(
        "Quickchat emulator serving at %s (press Ctrl-C to stop)", handle.base_url
    )


def run(
    service: EmulatorService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_remote: bool = False,
    timeout_keep_alive: int = 5,
    timeout_graceful_shutdown: int | None = 5,
    limit_concurrency: int | None = None,
    http: HTTPImplementation = "auto",
    log_level: LogLevel = "info",
    configure_logging: bool = True,
    on_ready: Callable[[ServerHandle], object] | None = None,
    startup_timeout: float = 10.0,
) -> None:
    """Serve the emulator until SIGINT or SIGTERM, then shut it down; call from the main thread.

    Once the server accepts connections, `on_ready` gets its `ServerHandle` (by default, where
    it listens is logged). Either signal then shuts it down and `run` returns normally, so the
    exit status stays the caller's; the previous signal handlers are put back.

    Args:
        service: what to serve.
        host: the address to listen on; loopback only, unless `allow_remote`.
        port: the port; 0 picks a free one (`on_ready` sees which).
        allow_remote: allow a non-loopback `host`.
        timeout_keep_alive: seconds an idle keep-alive connection stays open.
        timeout_graceful_shutdown: seconds requests in flight get when stopping (None: wait).
        limit_concurrency: answer 503 beyond this many concurrent connections.
        http: uvicorn's HTTP implementation.
        log_level: uvicorn's log level.
        configure_logging: configure logging as uvicorn's command line does; False leaves
            the handlers to the caller (uvicorn's loggers then propagate to the root logger).
        on_ready: called once with the running server, before waiting for a signal.
        startup_timeout: seconds to wait for the server to start.

    Raises:
        ValueError: `host` is not loopback and not `allow_remote`; or not the main thread.
        OSError: the address cannot be bound.
        RuntimeError: the server did not start, or stopped before any signal came.
    """
    _check_host(host, allow_remote=allow_remote)
    config = _config(
        service,
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        limit_concurrency=limit_concurrency,
        http=http,
        configure_logging=configure_logging,
    )
    stop = threading.Event()
    with _stop_on_signals(stop), _launch(service, config, startup_timeout) as handle:
        (on_ready or _log_serving)(handle)
        while handle.running and not stop.is_set():
            stop.wait(0.25)
    if not stop.is_set():
        raise RuntimeError("The emulator server stopped unexpectedly.")
