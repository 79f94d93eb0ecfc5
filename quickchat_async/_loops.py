"""What belongs to one event loop, and how the SDK moves on to the next one.

An HTTP engine's connections, a Redis client and an anyio lock work only on the event loop that
first used them. A client that outlives its loop (a script calling `asyncio.run()` per message,
Django's `async_to_sync`, a Celery task, a loop per test) keeps such things per loop:

- `current_loop()` names the running loop (anyio's token: the asyncio loop, or the trio run);
- `PerLoop` makes a thing on first use in a loop and closes it when that loop ends;
- `LoopLocal` lends a thing with nothing to close (a lock) to the tasks of one loop, and drops
  it when the last of them is done with it;
- `TurnLock` lets one turn at a time through, in call order, on whichever loop runs it.

`PerLoop` closes a loop's things while that loop still runs, so a loop can end with the client
open and leave nothing for the garbage collector to warn about: it holds each thing in an async
generator started on the loop, and `asyncio.run()`, `asyncio.Runner`, asgiref's `async_to_sync`
and `trio.run()` finalise the async generators still alive once they have cancelled the
remaining tasks, before the loop closes. A loop closed by hand needs `loop.shutdown_asyncgens()`
first, as asyncio's documentation asks; without it, what the loop held is forgotten.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Final, Generic, TypeVar

import anyio
import anyio.lowlevel
import sniffio

from ._exceptions import EventLoopError


__all__ = ["Bound", "LoopLocal", "PerLoop", "TurnLock", "current_loop"]

logger = logging.getLogger("quickchat_async")

_T = TypeVar("_T")

#: Closing a loop's things as it ends waits no longer than this (a peer that never answers).
_CLOSE_DEADLINE: Final = 10.0


#: What sniffio names while plain asyncio runs: nothing, or "asyncio" (under `anyio.run()`).
_ASYNCIO_OR_NONE: Final = (None, "asyncio")


def current_loop() -> object:
    """The running event loop: the asyncio loop, or the trio run's token.

    Trio (guest mode included) and trio-asyncio name themselves to sniffio while they run;
    when nothing is named, or asyncio (`anyio.run()` names it), asyncio's running loop is
    asked directly. That saves 11k of a conversation turn's 128k instructions over anyio's
    `current_token()` (callgrind, no network; 2% of a whole request on aiohttp).

    Raises:
        anyio.NoEventLoopError: no event loop runs in this thread.
    """
    if (
        sniffio.thread_local.name in _ASYNCIO_OR_NONE
        and sniffio.current_async_library_cvar.get() in _ASYNCIO_OR_NONE
    ):
        try:  # not contextlib.suppress: its `with` block would cost more than the call
            return asyncio.get_running_loop()
        except RuntimeError:  # none running: anyio raises its error below
            pass
    return anyio.lowlevel.current_token().native_token


def _closed(loop: object) -> bool:
    """Whether `loop` is an asyncio loop closed already (a trio run always finalises)."""
    is_closed = getattr(loop, "is_closed", None)
    return is_closed is not None and bool(is_closed())


class Bound(Generic[_T]):
    """A thing made for one event loop, and what closes it when that loop ends."""

    __slots__ = ("keeper", "loop", "value")

    def __init__(self, loop: object, value: _T) -> None:
        self.loop = loop
        self.value = value
        self.keeper: AsyncGenerator[None] | None = None


class PerLoop(Generic[_T]):
    """One thing per running event loop: made on first use there, closed when that loop ends.

    Loops running at once (one per thread) each get their own. Finding the thing again costs
    one `current_loop()` and a comparison with `last`; `enter()` is for when that misses.

    Args:
        make: makes the thing for the running loop (it may refuse, raising).
        close: closes a thing, on its own loop.
    """

    __slots__ = ("_bound", "_close", "_guard", "_make", "closed", "last")

    def __init__(self, make: Callable[[], _T], close: Callable[[_T], Awaitable[object]]) -> None:
        self._make = make
        self._close = close
        self._bound: dict[object, Bound[_T]] = {}
        #: Loops in two threads may enter at once.
        self._guard = threading.Lock()
        #: The thing used last, by whichever loop (None once it is closed).
        self.last: Bound[_T] | None = None
        #: Set by `aclose()`; the owner refuses further use.
        self.closed = False

    async def here(self) -> _T:
        """The running loop's thing, made now if it has none."""
        loop = current_loop()
        bound = self.last
        if bound is None or bound.loop is not loop:
            bound = await self.enter(loop)
        return bound.value

    async def enter(self, loop: object) -> Bound[_T]:
        """The thing of `loop`, the running one, made now if it has none."""
        with self._guard:
            bound = self._bound.get(loop)
            if bound is None:
                self._forget_closed_loops()
                bound = self._bound[loop] = Bound(loop, self._make())
            self.last = bound
        if bound.keeper is None:
            # Runs to its `yield` at once (no await before it): nothing can slip in between.
            keeper = bound.keeper = self._keep(bound)
            await keeper.asend(None)
        return bound

    async def _keep(self, bound: Bound[_T]) -> AsyncGenerator[None]:
        """Hold `bound` until its loop ends or `aclose()`, then close it on that loop."""
        try:
            yield
        finally:
            with self._guard:
                if self._bound.get(bound.loop) is bound:
                    del self._bound[bound.loop]
                if self.last is bound:  # a loop that runs on after this makes a new one
                    self.last = None
            # Shielded: trio finalises async generators inside a cancelled scope.
            with anyio.move_on_after(_CLOSE_DEADLINE, shield=True) as scope:
                await self._close(bound.value)
            if scope.cancelled_caught:
                logger.warning(
                    "Closing the connections of an event loop took over %g s; left to the "
                    "garbage collector.",
                    _CLOSE_DEADLINE,
                )

    async def aclose(self) -> None:
        """Close the running loop's thing now, and mark all closed (the owner refuses more use).

        Things of loops that ended were closed as they ended; those of loops still running (in
        other threads) are closed when each ends; those of loops closed by hand without
        finalising their async generators are forgotten.
        """
        loop = current_loop()
        with self._guard:
            self.closed = True
            here = self._bound.get(loop)
            self._forget_closed_loops()
        if here is not None and here.keeper is not None:
            await here.keeper.aclose()

    def _forget_closed_loops(self) -> None:
        """Drop what belongs to loops closed already; nothing can close it through them."""
        for loop in [loop for loop in self._bound if _closed(loop)]:
            del self._bound[loop]


class _Lent(Generic[_T]):
    __slots__ = ("users", "value")

    def __init__(self, value: _T) -> None:
        self.value = value
        self.users = 0


class LoopLocal(Generic[_T]):
    """A thing per event loop (a lock, a limiter), kept while tasks of that loop use it.

    Only the loop's own thread touches its entry, so loops in several threads need no guard.

    Args:
        make: makes the thing, on the running loop.
    """

    __slots__ = ("_lent", "_make")

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._lent: dict[object, _Lent[_T]] = {}

    def __len__(self) -> int:
        """On how many loops it is in use."""
        return len(self._lent)

    @contextlib.contextmanager
    def lend(self) -> Generator[_T]:
        """The running loop's thing, for the length of the block."""
        loop = current_loop()
        lent = self._lent.get(loop)
        if lent is None:
            lent = self._lent[loop] = _Lent(self._make())
        lent.users += 1
        try:
            yield lent.value
        finally:
            lent.users -= 1
            if not lent.users:
                del self._lent[loop]


#: Guards the few fields of every `TurnLock`: held for a handful of bytecodes, never across an
#: await. One for all of them keeps a conversation small. (Taken with acquire() and release():
#: a `with` block costs twice as much here.)
_TURNS: Final = threading.Lock()


class TurnLock:
    """One turn at a time, in call order, on whichever event loop runs the turns.

    It belongs to no loop: a free lock is taken without an await, and only a turn that has to
    wait makes an `anyio.Event`, on its own loop. A turn that comes from another loop while one
    runs is refused rather than queued: no loop can wake another loop's waiter, and two threads
    taking turns in one conversation would interleave its history anyway.
    """

    __slots__ = ("_thread", "_waiters")

    def __init__(self) -> None:
        #: The thread whose event loop runs the current turn; None when free.
        self._thread: int | None = None
        self._waiters: collections.deque[anyio.Event] | None = None

    def take(self) -> anyio.Event | None:
        """Take the lock (None), or queue for it: then pass the event to `wait()`.

        Raises:
            EventLoopError: a turn is running on an event loop of another thread.
        """
        me = threading.get_ident()
        _TURNS.acquire()
        try:
            if self._thread is None:
                self._thread = me
                return None
            if self._thread != me:
                raise EventLoopError(
                    "This conversation is taking a turn on an event loop in another thread. "
                    "Its turns go one at a time, in order, from one event loop at a time: "
                    "give each thread conversations of its own (resume() one from the other's "
                    "snapshot() once its turn is over), or send all the turns from one loop."
                )
            waiter = anyio.Event()
            if self._waiters is None:
                self._waiters = collections.deque()
            self._waiters.append(waiter)
            return waiter
        finally:
            _TURNS.release()

    async def wait(self, waiter: anyio.Event) -> None:
        """Wait until the lock is handed to `waiter`; cancelled, leave the queue."""
        try:
            await waiter.wait()
        except BaseException:
            _TURNS.acquire()
            try:
                if waiter.is_set():  # handed over just as the cancellation came: pass it on
                    self._release()
                elif self._waiters is not None:
                    self._waiters.remove(waiter)
            finally:
                _TURNS.release()
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        _TURNS.acquire()
        try:  # _release(), inlined: this runs on every turn
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._thread = None
        finally:
            _TURNS.release()

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the next turn is of the same thread and loop
        else:
            self._thread = None
