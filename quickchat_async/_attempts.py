"""How a turn's attempts go, for the async and the blocking sender alike, with no I/O.

A turn's first attempt is made outside stamina: nearly every turn succeeds at once, and a
retry context costs more than the rest of the SDK's own work for a turn. A first failure that
the retry policy (`_wire.retry_delay`) allows is handed to stamina, whose backoff, testing mode
and instrumentation hooks both senders share through `Retries`; each retry is logged here. An
attempt that had to wait for a connection slot gets what is left of its deadline
(`after_slot_wait`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Final, Protocol

import attrs
import stamina

from ._config import ClientConfig
from ._exceptions import QuickchatError
from ._wire import BACKOFF, ChatRequest, retry_delay


__all__ = ["Retries", "after_slot_wait"]

logger = logging.getLogger("quickchat_async")

#: Where stamina's attempts start: its first attempt re-raises the failure made outside it.
_HANDED_OVER: Final = 1


class _RetryContext(Protocol):
    """What `stamina.retry_context` returns: attempts to iterate with ``for`` or ``async for``."""

    def __iter__(self) -> Iterator[stamina.Attempt]: ...
    def __aiter__(self) -> AsyncIterator[stamina.Attempt]: ...


class Retries:
    """The retries of one turn whose first attempt failed, as stamina attempts.

    A sender iterates it as it would `stamina.retry_context` (``for``, or ``async for``), and
    calls `begin()` first thing in each attempt's block::

        try:
            return attempt(1)
        except QuickchatError as exc:
            retries = Retries.after(exc, config=config, url=request.url)
            if retries is None:
                raise
        for attempt in retries:
            with attempt:
                retries.begin(attempt.num)
                return attempt(attempt.num)

    Stamina's first attempt is the failure already seen, re-raised by `begin()`, so that
    stamina schedules the first wait itself; its later attempts are the retries.
    """

    __slots__ = ("_config", "_last", "_url")

    def __init__(self, first: QuickchatError, *, config: ClientConfig, url: str) -> None:
        self._config = config
        self._url = url
        self._last: Exception = first

    @classmethod
    def after(cls, first: QuickchatError, *, config: ClientConfig, url: str) -> Retries | None:
        """The retries that the policy allows after a failed first attempt; None for none."""
        if not config.max_retries or cls._decide(config, first) is False:
            return None
        return cls(first, config=config, url=url)

    @staticmethod
    def _decide(config: ClientConfig, exc: Exception) -> bool | float:
        return retry_delay(exc, retry_ambiguous=config.retry_ambiguous)

    def _on(self, exc: Exception) -> bool | float:
        """Stamina's `on` hook: the policy's decision, remembering the failure for the log."""
        self._last = exc
        return self._decide(self._config, exc)

    def _context(self) -> _RetryContext:
        return stamina.retry_context(
            on=self._on, attempts=self._config.max_retries + 1, timeout=None, **BACKOFF
        )

    def __iter__(self) -> Iterator[stamina.Attempt]:
        return iter(self._context())

    def __aiter__(self) -> AsyncIterator[stamina.Attempt]:
        return aiter(self._context())

    def begin(self, num: int) -> None:
        """Start stamina's attempt `num`: the first re-raises the first failure; others log.

        Raises:
            QuickchatError: on attempt 1, the first attempt's failure.
        """
        if num == _HANDED_OVER:
            raise self._last
        logger.info(
            "Retrying the Chat request to %s (attempt %d of %d) after %s",
            self._url,
            num,
            self._config.max_retries + 1,
            type(self._last).__name__,
        )


def after_slot_wait(request: ChatRequest, waited: float) -> ChatRequest | None:
    """The request of an attempt that waited `waited` seconds for a connection slot.

    The wait counts against the attempt's deadline (`Timeout.total`), so the rest of the
    attempt gets what is left of it. None when nothing is left: an attempt with no time could
    only fail, perhaps after the message reached the server, and unsent is better.
    """
    total = request.timeout.total
    if total is None:
        return request
    remaining = total - waited
    if remaining <= 0:
        return None
    return attrs.evolve(request, timeout=attrs.evolve(request.timeout, total=remaining))
