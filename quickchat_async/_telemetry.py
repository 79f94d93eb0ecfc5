"""The seam where a turn is observed: one `TurnTrace` per turn, told of each attempt.

The sender opens a trace around every turn (`Telemetry.turn()`), tells it when an attempt
starts and fails, and when the reply arrives; the trace's exit sees how the turn ended. With
nothing to report to, `NO_TELEMETRY` hands out one shared trace that does nothing, so a turn
pays two method calls for it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final, Protocol, Self

from ._config import ClientConfig
from ._exceptions import QuickchatError
from ._models import Reply
from ._wire import ChatRequest


__all__ = ["NO_TELEMETRY", "Telemetry", "TurnTrace"]


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
