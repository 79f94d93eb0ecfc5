"""A FIFO semaphore whose uncontended path never awaits: connection slots, a turn at a time."""

from __future__ import annotations

from collections import deque

import anyio


__all__ = ["Slots"]


class Slots:
    """`total` slots, handed out in call order, with no await when one is free.

    The client's connection slots (waiting happens here, outside the HTTP engine) and a
    conversation's one-turn-at-a-time lock. A waiter that is handed a slot just as it is
    cancelled passes the slot on, so none is lost.
    """

    __slots__ = ("_free", "_waiters", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiters: deque[anyio.Event] = deque()

    @property
    def in_use(self) -> int:
        """The slots taken (a slot handed to a waiter counts as taken)."""
        return self.total - self._free

    @property
    def waiting(self) -> int:
        """The tasks queued for a slot."""
        return len(self._waiters)

    def take_nowait(self) -> bool:
        """Take a free slot if there is one and nobody is queued for it."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Queue for a slot; `give()` hands it over directly."""
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # handed a slot just as it was cancelled: pass it on
                self.give()
            else:
                self._waiters.remove(event)
            raise

    def give(self) -> None:
        """Return a slot: to the first waiter if any, else to the free ones."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1
