"""A network backend for httpcore2's connection pool built on asyncio's transports and protocols.

httpcore2 (the connection pool under httpx2) talks to sockets through a network backend, a
public seam (`httpcore2.AsyncNetworkBackend`). Its default goes through anyio streams, and pays
on every read and write for an anyio cancel scope with a loop timer, an exception-mapping
context manager, a checkpoint, and a pause/resume of reading; and, each time the pool looks at a
connection, for a `poll()` of its socket. On asyncio this backend sits on an `asyncio.Protocol`:

- a read returns buffered bytes at once, or waits on one future, with a `call_later` timer only
  when it has to wait;
- a write hands the bytes to the transport, and waits only when the transport pushes back;
- the protocol keeps reading while a connection is idle (up to a high-water mark), so "is this
  idle connection readable", asked each time the pool looks at it, is answered from state: a
  server that closed an idle connection is known without a syscall.

On trio (or anything else sniffio names), it hands over to httpcore2's own backends. The same
design is proposed upstream (pydantic/httpx2 pull request 1170, "Add a native asyncio network
backend"); this one goes once httpx2 ships it.

What it pays: `python benchmarks/bench.py`, 64 in flight on one nginx, the SDK default made
1.01x the requests per second of raw `httpx2.AsyncClient.post` on anyio's streams, and 1.26x to
1.39x on this backend (medians of `--compare "raw httpx2" "SDK default" --rounds 5`: 1.28x to
1.32x); at one request in flight, 600 µs a request where raw httpx2 takes 800 µs.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Iterable
from typing import Any, Final, cast

import httpcore2
import sniffio


__all__ = ["NativeAsyncioBackend"]

#: Reading stops while this much is buffered and unread, and starts again below `_LOW_WATER`.
_HIGH_WATER: Final = 256 * 1024
_LOW_WATER: Final = 64 * 1024
#: anyio's delay between the attempts of RFC 6555 ("happy eyeballs") when a name has several
#: addresses; the same here.
_HAPPY_EYEBALLS_DELAY: Final = 0.25


class _Protocol(asyncio.Protocol):
    """Buffers what arrives on one connection and wakes the reader and the writer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        #: The peer closed its side, or the connection was lost (`error` then says why).
        self.at_eof = False
        self.error: Exception | None = None
        self.reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    # --- asyncio's callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self._read_waiter)

    def eof_received(self) -> bool:
        self.at_eof = True
        _wake(self._read_waiter)
        return False  # the transport closes itself: HTTP/1.1 sends nothing after the peer's EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.at_eof = True
        self.error = exc
        _wake(self._read_waiter)
        _wake(self._write_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._write_waiter)

    # --- what the stream waits for -----------------------------------------------------------

    async def readable(self, within: float | None) -> None:
        """Wait until there is data or EOF; `httpcore2.ReadTimeout` after `within` seconds."""
        self._read_waiter = waiter = self._loop.create_future()
        try:
            await _wait(self._loop, waiter, within, httpcore2.ReadTimeout)
        finally:
            self._read_waiter = None

    async def drained(self, within: float | None) -> None:
        """Wait until the transport takes more; `httpcore2.WriteTimeout` after `within`."""
        while self._writing_paused and self.error is None and not self.at_eof:
            self._write_waiter = waiter = self._loop.create_future()
            try:
                await _wait(self._loop, waiter, within, httpcore2.WriteTimeout)
            finally:
                self._write_waiter = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


async def _wait(
    loop: asyncio.AbstractEventLoop,
    waiter: asyncio.Future[None],
    within: float | None,
    error: type[Exception],
) -> None:
    """Await `waiter`, failing with `error` once `within` seconds have passed."""
    if within is None:
        await waiter
        return
    timer = loop.call_later(within, _expire, waiter, error)
    try:
        await waiter
    finally:
        timer.cancel()


class _Stream(httpcore2.AsyncNetworkStream):
    """One connection, as httpcore2 reads and writes it."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(
        self,
        max_bytes: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore2's interface
    ) -> bytes:
        protocol = self._protocol
        if not protocol.chunks and not protocol.at_eof:
            await protocol.readable(timeout)
        chunks = protocol.chunks
        if not chunks:
            if protocol.error is not None:
                raise httpcore2.ReadError(str(protocol.error)) from protocol.error
            return b""  # the peer closed the connection
        chunk = chunks.popleft()
        if len(chunk) > max_bytes:
            chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered < _LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def write(
        self,
        buffer: bytes,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore2's interface
    ) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing() or protocol.error is not None:
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        await protocol.drained(timeout)
        if protocol.error is not None:
            raise httpcore2.WriteError(str(protocol.error)) from protocol.error

    async def aclose(self) -> None:
        self._transport.close()
        # asyncio closes a plain socket on the loop's next pass; a TLS one once the close_notify
        # exchange ends, by itself (or after asyncio's shutdown timeout).
        await asyncio.sleep(0)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore2's interface
    ) -> httpcore2.AsyncNetworkStream:
        protocol = self._protocol
        if protocol.chunks or protocol.at_eof or self._transport.is_closing():
            # Bytes already here did not come through TLS (a TLS server speaks only after the
            # client's hello), and a closed connection never completes a handshake.
            self._transport.close()
            raise httpcore2.ConnectError(
                "the server sent data before the TLS handshake"
                if protocol.chunks
                else "the connection closed before the TLS handshake"
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore2.ConnectError(str(exc)) from exc
        if transport is None:  # pragma: no cover -- only for a server-side protocol
            raise httpcore2.ConnectError("the TLS handshake did not complete")
        protocol.transport = transport
        return _Stream(transport, protocol)

    def get_extra_info(self, info: str) -> Any:  # noqa: ANN401 -- httpcore2's signature
        if info == "is_readable":  # an idle connection that got data or EOF is spent
            return bool(self._protocol.chunks) or self._protocol.at_eof
        name = {
            "ssl_object": "ssl_object",
            "client_addr": "sockname",
            "server_addr": "peername",
            "socket": "socket",
        }.get(info)
        return None if name is None else self._transport.get_extra_info(name)


def _httpcore2_backend(library: str) -> httpcore2.AsyncNetworkBackend:
    """httpcore2's own backend for `library`: trio's, or anyio's."""
    # httpcore2 declares both as stand-ins when trio or anyio is missing: typed as the real ones
    backend = httpcore2.TrioBackend() if library == "trio" else httpcore2.AnyIOBackend()
    return cast("httpcore2.AsyncNetworkBackend", backend)


class NativeAsyncioBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend: asyncio's own transports, httpcore2's backends elsewhere."""

    def __init__(self) -> None:
        self._others: dict[str, httpcore2.AsyncNetworkBackend] = {}

    def _other(self) -> httpcore2.AsyncNetworkBackend | None:
        """httpcore2's backend for the running library, or None under asyncio."""
        library = sniffio.current_async_library()
        if library == "asyncio":
            return None
        other = self._others.get(library)
        if other is None:
            other = self._others[library] = _httpcore2_backend(library)
        return other

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore2's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        other = self._other()
        if other is not None:
            return await other.connect_tcp(
                host,
                port,
                timeout=timeout,
                local_address=local_address,
                socket_options=socket_options,
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(loop),
                    host,
                    port,
                    local_addr=None if local_address is None else (local_address, 0),
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except (OSError, ValueError) as exc:  # ValueError: a host name IDNA cannot encode
            raise httpcore2.ConnectError(str(exc)) from exc
        # asyncio sets TCP_NODELAY on TCP sockets itself, as anyio does.
        sock = transport.get_extra_info("socket")
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
        except OSError as exc:
            transport.close()
            raise httpcore2.ConnectError(f"could not set a socket option: {exc}") from exc
        return _Stream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore2's interface
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        other = self._other() or _httpcore2_backend("asyncio")
        return await other.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        other = self._other()
        if other is None:
            await asyncio.sleep(seconds)
        else:
            await other.sleep(seconds)
