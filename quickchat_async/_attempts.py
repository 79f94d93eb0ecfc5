"""How a turn's attempts go, for the async and the blocking sender alike, with no I/O.

A turn's first attempt is made outside stamina: nearly every turn succeeds at once, and a retry
context costs more than the rest of the SDK's own work for a turn: an attempt that succeeds at
once takes 30 µs to 50 µs inside `stamina.retry_context`, 0.1 µs outside it
(`python benchmarks/retry_context_cost.py`), where raw aiohttp spends about 150 µs on a whole
request at 64 in flight. A first failure that the retry policy (`_wire.retry_delay`) allows is
handed to stamina, whose backoff, testing mode and instrumentation hooks both senders share;
each retry is logged.

`Attempts` keeps what one turn has been through: its settings (`Call`), when it started,
whether its message may have landed, and its deadline (`Call.deadline`), which cuts each
attempt short and refuses waits that would outlast it. An attempt that had to wait for a
connection slot gets what is left of its own limit (`after_slot_wait`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final, Protocol

import attrs
import stamina

from ._config import Call
from ._exceptions import APITimeoutError, QuickchatError
from ._telemetry import TurnTrace
from ._wire import BACKOFF, ChatRequest, retry_delay, retry_log_line, turn_deadline_error


__all__ = ["Attempts", "after_slot_wait"]

logger = logging.getLogger("quickchat_async")

#: Where stamina's attempts start: its first attempt re-raises the failure made outside it.
_HANDED_OVER: Final = 1
#: The shortest limit an attempt gets once its turn's deadline has (nearly) run out.
_LAST_MOMENT: Final = 0.001
#: What `Attempts` holds as its last failure before any.
_NO_FAILURE: Final = QuickchatError("no attempt has failed yet")


class _RetryContext(Protocol):
    """What `stamina.retry_context` returns: attempts to iterate with ``for`` or ``async for``."""

    def __iter__(self) -> Iterator[stamina.Attempt]: ...
    def __aiter__(self) -> AsyncIterator[stamina.Attempt]: ...


class Attempts:
    """One turn's attempts: what it has been through, and the retry policy, for stamina.

    A sender runs a turn as below (the async sender the same with ``async``/``await``);
    `begin()` comes first in each of stamina's attempts::

        attempts = Attempts(call, url=request.url, retry_ambiguous=..., clock=...)
        try:
            return attempt(1)
        except QuickchatError as exc:
            if not attempts.retry_after(exc):
                raise
        for attempt in attempts:
            with attempt:
                attempts.begin(attempt.num)
                return attempt(attempt.num)

    Stamina's first attempt is the failure already seen, re-raised by `begin()`, so that
    stamina schedules the first wait itself; its later attempts are the retries. Each attempt's
    failure goes through `failed()`, which says when it means the turn's deadline ran out.

    Args:
        call: the turn's settings.
        url: where the turn goes, for the log.
        retry_ambiguous: also retry failures after which the message may have landed.
        clock: the clock the deadline is kept on (the event loop's, or `time.monotonic`).
    """

    __slots__ = (
        "_clock",
        "_last",
        "_num",
        "_url",
        "call",
        "deadline_at",
        "landed",
        "retry_ambiguous",
        "sending",
        "started",
    )

    def __init__(
        self, call: Call, *, url: str, retry_ambiguous: bool, clock: Callable[[], float]
    ) -> None:
        self.call = call
        self._url = url
        self.retry_ambiguous = retry_ambiguous
        self._clock = clock
        #: For `Reply.elapsed`: a wall clock. The deadline is kept on `clock`, read only by
        #: turns that have one (anyio's costs 3 µs a reading).
        self.started = time.monotonic()
        self.deadline_at = None if call.deadline is None else clock() + call.deadline
        #: An earlier attempt failed after the message may have reached the server.
        self.landed = False
        #: An attempt is in the transport right now.
        self.sending = False
        #: The last failure judged, and the number of stamina's attempt under way.
        self._last: Exception = _NO_FAILURE
        self._num = _HANDED_OVER

    # --- the turn's state ---------------------------------------------------------------------

    def may_have_landed(self) -> bool:
        """Whether the server may have recorded the message, if the turn ends now."""
        return self.landed or self.sending

    def out_of_time(self) -> bool:
        """Whether the turn's deadline has run out."""
        return self.deadline_at is not None and self._clock() >= self.deadline_at

    def within_deadline(self, request: ChatRequest) -> ChatRequest:
        """The request, its attempt cut short to end by the turn's deadline."""
        if self.deadline_at is None:
            return request
        remaining = max(self.deadline_at - self._clock(), _LAST_MOMENT)
        total = request.timeout.total
        if total is not None and total <= remaining:
            return request
        return attrs.evolve(request, timeout=attrs.evolve(request.timeout, total=remaining))

    def deadline_error(self) -> APITimeoutError:
        """The error of this turn, ended by its deadline."""
        return turn_deadline_error(
            url=self._url, deadline=self.call.deadline, sent=self.may_have_landed()
        )

    def failed(self, exc: QuickchatError, *, num: int, trace: TurnTrace) -> APITimeoutError | None:
        """Attempt `num` failed, as told to `trace`.

        Returns the turn's deadline error if that is what ended the attempt, else None.
        """
        trace.attempt_failed(num, exc)
        self.landed = self.landed or exc.outcome_unknown
        if isinstance(exc, APITimeoutError) and self.out_of_time():
            return self.deadline_error()
        return None

    # --- the retries --------------------------------------------------------------------------

    def retry_delay(self, exc: Exception) -> bool | float:
        """The retry policy, for stamina; a wait that would outlast the deadline is refused.

        With a deadline, the backoff is worked out here (stamina's schedule: 0.5 s, doubling
        to 8 s, plus up to 1 s of jitter), so that a wait is cut to what the turn has left: a
        blocking sender cannot cancel stamina's sleep when the deadline comes.
        """
        self._last = exc
        delay = retry_delay(exc, retry_ambiguous=self.retry_ambiguous)
        if self.deadline_at is None or delay is False:
            return delay
        left = self.deadline_at - self._clock()
        if delay is True:
            return min(self._backoff(), left) if left > 0 else False
        return delay if delay < left else False

    def _backoff(self) -> float:
        """Stamina's wait after its attempt `_num` failed: 0.5 s, doubling, jittered."""
        wait = min(BACKOFF["wait_initial"] * 2.0 ** (self._num - 1), BACKOFF["wait_max"])
        return wait + random.uniform(0, BACKOFF["wait_jitter"])  # noqa: S311 -- jitter

    def retry_after(self, first: QuickchatError) -> bool:
        """Whether the policy allows retries after the first attempt's failure."""
        return bool(self.call.max_retries) and self.retry_delay(first) is not False

    def _context(self) -> _RetryContext:
        return stamina.retry_context(
            on=self.retry_delay, attempts=self.call.max_retries + 1, timeout=None, **BACKOFF
        )

    def __iter__(self) -> Iterator[stamina.Attempt]:
        return iter(self._context())

    def __aiter__(self) -> AsyncIterator[stamina.Attempt]:
        return aiter(self._context())

    def begin(self, num: int) -> None:
        """Start stamina's attempt `num`: the first re-raises the first failure; others log.

        Raises:
            Exception: on attempt 1, the first attempt's failure.
            APITimeoutError: the turn's deadline ran out during the wait before this retry.
        """
        self._num = num
        if num == _HANDED_OVER:
            raise self._last
        if self.out_of_time():
            raise self.deadline_error()
        logger.info(retry_log_line(self._url, num, self.call.max_retries + 1, self._last))


def after_slot_wait(request: ChatRequest, waited: float) -> ChatRequest | None:
    """The request of an attempt that waited `waited` seconds for a connection slot.

    The wait counts against the attempt's limit (`Timeout.total`), so the rest of the attempt
    gets what is left of it. None when nothing is left: an attempt with no time could only
    fail, perhaps after the message reached the server, and unsent is better.
    """
    total = request.timeout.total
    if total is None:
        return request
    remaining = total - waited
    if remaining <= 0:
        return None
    return attrs.evolve(request, timeout=attrs.evolve(request.timeout, total=remaining))
