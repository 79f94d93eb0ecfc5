"""What a client reports its turns to, chosen once, when the client is made.

OpenTelemetry's telemetry (`_otel`) when `opentelemetry-api` is installed, otherwise none, with
nothing of OpenTelemetry imported; and, when the SDK's logger is at DEBUG as the client is
made, a trace that logs each turn on top (the message text included: DEBUG only).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from types import TracebackType
from typing import Self

from ._config import ClientConfig
from ._exceptions import QuickchatError, ValidationError
from ._models import Reply
from ._telemetry import NO_TELEMETRY, Telemetry, TurnTrace
from ._types import NOT_GIVEN
from ._wire import ChatRequest


__all__ = ["resolve_telemetry"]

logger = logging.getLogger("quickchat_async")


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
