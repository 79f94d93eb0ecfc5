"""The seam where a turn is observed: one `TurnTrace` per turn, told of each attempt.

The sender opens a trace around every turn (`Telemetry.turn()`), tells it when an attempt
starts and fails, and when the reply arrives; the trace's exit sees how the turn ended. With
nothing to report to, `NO_TELEMETRY` hands out one shared trace that does nothing, so a turn
pays two method calls for it.

A client picks its telemetry once, when it is made (`resolve_telemetry`): OpenTelemetry's
(`_otel`) when `opentelemetry-api` is installed, otherwise none, with nothing imported; and,
when the SDK's logger is at DEBUG, a trace that logs each turn (the message text included).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from types import TracebackType
from typing import Final, Protocol, Self

from ._config import ClientConfig
from ._exceptions import QuickchatError, ValidationError
from ._models import Reply
from ._types import NOT_GIVEN
from ._wire import ChatRequest


__all__ = ["NO_TELEMETRY", "Telemetry", "TurnTrace", "resolve_telemetry"]

logger = logging.getLogger("quickchat_async")


class TurnTrace(Protocol):
    """What the sender tells about one turn; a context manager around it."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def attempt(self, num: int) -> None:
        """Attempt `num` (1 for the first) is about to wait for its turn and be sent."""
        ...

    def attempt_failed(self, num: int, error: QuickchatError) -> None:
        """Attempt `num` failed with `error` (it may be retried)."""
        ...

    def replied(self, reply: Reply) -> None:
        """The turn's reply arrived."""
        ...


class Telemetry(Protocol):
    """Where turns are reported."""

    def turn(self, config: ClientConfig, request: ChatRequest, conv_id: str | None) -> TurnTrace:
        """Open the trace of one turn."""
        ...


class _NoTrace:
    """A trace that records nothing."""

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def attempt(self, num: int) -> None:
        """Nothing to record."""

    def attempt_failed(self, num: int, error: QuickchatError) -> None:
        """Nothing to record."""

    def replied(self, reply: Reply) -> None:
        """Nothing to record."""


class _NoTelemetry:
    """Telemetry that reports nowhere."""

    __slots__ = ()

    def turn(
        self,
        config: ClientConfig,  # noqa: ARG002
        request: ChatRequest,  # noqa: ARG002
        conv_id: str | None,  # noqa: ARG002
    ) -> TurnTrace:
        return _NO_TRACE


_NO_TRACE: Final = _NoTrace()
#: The telemetry of a client with nothing to report to.
NO_TELEMETRY: Final[Telemetry] = _NoTelemetry()


class _LogTrace:
    """A trace that logs the turn at DEBUG on the `quickchat_async` logger, text included.

    Never a header or a body: the credential cannot reach a record.
    """

    __slots__ = ("_conv_id", "_request")

    def __init__(self, request: ChatRequest, conv_id: str | None) -> None:
        self._request = request
        self._conv_id = conv_id

    def __enter__(self) -> Self:
        where = "a new conversation" if self._conv_id is None else f"conv_id {self._conv_id}"
        logger.debug("Turn to %s, %s: %r", self._request.url, where, self._request.text)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            unknown = isinstance(exc, QuickchatError) and exc.outcome_unknown
            logger.debug("Turn failed: %s (outcome_unknown=%s)", type(exc).__name__, unknown)

    def attempt(self, num: int) -> None:
        """Log the attempts after the first."""
        if num > 1:
            logger.debug("Attempt %d", num)

    def attempt_failed(self, num: int, error: QuickchatError) -> None:
        """Log the failed attempt's error type, and whether the message may have landed."""
        logger.debug(
            "Attempt %d failed: %s (outcome_unknown=%s)",
            num,
            type(error).__name__,
            error.outcome_unknown,
        )

    def replied(self, reply: Reply) -> None:
        """Log the reply, its conversation and what the turn took."""
        logger.debug(
            "Reply in %.3f s after %d attempt(s), conv_id %s: %r",
            reply.elapsed,
            reply.attempts,
            reply.conv_id,
            reply.text,
        )


class _Both:
    """Two traces of one turn, told everything in turn."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: TurnTrace, second: TurnTrace) -> None:
        self._first = first
        self._second = second

    def __enter__(self) -> Self:
        self._first.__enter__()
        try:
            self._second.__enter__()
        except BaseException as exc:
            self._first.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._second.__exit__(exc_type, exc, tb)
        finally:
            self._first.__exit__(exc_type, exc, tb)

    def attempt(self, num: int) -> None:
        self._first.attempt(num)
        self._second.attempt(num)

    def attempt_failed(self, num: int, error: QuickchatError) -> None:
        self._first.attempt_failed(num, error)
        self._second.attempt_failed(num, error)

    def replied(self, reply: Reply) -> None:
        self._first.replied(reply)
        self._second.replied(reply)


class _LoggedTelemetry:
    """Some telemetry, plus a DEBUG log of every turn."""

    __slots__ = ("_telemetry",)

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def turn(self, config: ClientConfig, request: ChatRequest, conv_id: str | None) -> TurnTrace:
        if self._telemetry is NO_TELEMETRY:
            return _LogTrace(request, conv_id)
        return _Both(self._telemetry.turn(config, request, conv_id), _LogTrace(request, conv_id))


@functools.cache
def _has_opentelemetry() -> bool:
    """Whether `opentelemetry-api` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # `opentelemetry` itself is missing (or blocked)
        return False


def resolve_telemetry(telemetry: object) -> Telemetry:
    """The telemetry a client made with `telemetry=` reports to.

    Not given: OpenTelemetry's, with the global providers, when `opentelemetry-api` is
    installed; otherwise none. None: none. When the `quickchat_async` logger is at DEBUG, each
    turn is logged as well.

    Raises:
        ValidationError: an object without a `turn()` method.
    """
    if telemetry is NOT_GIVEN:
        if _has_opentelemetry():
            from ._otel import OpenTelemetry  # noqa: PLC0415 -- only when it is installed

            telemetry = OpenTelemetry()
        else:
            telemetry = NO_TELEMETRY
    elif telemetry is None:
        telemetry = NO_TELEMETRY
    elif not callable(getattr(telemetry, "turn", None)):
        raise ValidationError(
            "telemetry must be an OpenTelemetry (quickchat_async.otel), an object with a "
            f"turn() method, or None; not {type(telemetry).__name__}."
        )
    checked: Telemetry = telemetry  # type: ignore[assignment]
    if logger.isEnabledFor(logging.DEBUG):
        return _LoggedTelemetry(checked)
    return checked
