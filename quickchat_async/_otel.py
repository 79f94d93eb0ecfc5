"""OpenTelemetry for turns, on `opentelemetry-api` alone (the `[otel]` extra).

Each turn is one CLIENT span following the GenAI semantic conventions for invoking a remote
agent (`invoke_agent`): it covers every attempt, backoff and wait of the turn, is current while
the turn runs (so the HTTP engines' own OpenTelemetry spans nest under it), carries an event per
attempt, and ends with `error.type` when the turn failed. The turn's duration goes to the
`gen_ai.client.operation.duration` histogram with the same low-cardinality attributes.

Nothing here reads a header or a body: credentials cannot reach a span. The user's message and
the reply are recorded only on opt-in (`record_content=True`, or
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`).

Until an OpenTelemetry SDK is configured, the API's tracer and meter are no-ops, and a turn
costs a few attribute look-ups and no-op calls (docs/production.md has the measurement).
"""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.parse
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._config import ClientConfig
from ._exceptions import APIStatusError, QuickchatError, RateLimitError, ServiceUnavailableError
from ._models import Reply
from ._telemetry import NO_TELEMETRY, TurnTrace
from ._version import __version__
from ._wire import ChatRequest


if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ["CONTENT_ENV", "DURATION_BUCKETS", "OpenTelemetry"]

#: The standard switch of GenAI instrumentations for recording message content.
CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_ON: Final = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})
#: The bucket boundaries the conventions advise for `gen_ai.client.operation.duration`.
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_OPERATION: Final = "invoke_agent"
_PROVIDER: Final = "quickchat"
_SCOPE: Final = "quickchat_async"
_ATTEMPT_EVENT: Final = "quickchat.attempt"
_FAILED_EVENT: Final = "quickchat.attempt.failed"
_CANCELLED: Final = "cancelled"


@functools.lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[str, int]:
    """`server.address` and `server.port` of a base URL."""
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def _content_from_env() -> bool:
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON


def _messages(role: str, text: str, *, finish_reason: str | None = None) -> str:
    """One message in the conventions' JSON form of `gen_ai.input/output.messages`."""
    message: dict[str, object] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return json.dumps([message], ensure_ascii=False)


def _tracer(provider: TracerProvider | None) -> Tracer:
    return trace.get_tracer(_SCOPE, __version__, provider)


def _histogram(provider: MeterProvider | None) -> Histogram:
    meter = metrics.get_meter(_SCOPE, __version__, provider)
    return meter.create_histogram(
        "gen_ai.client.operation.duration",
        unit="s",
        description="GenAI operation duration.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )


# Every client on the global providers shares one tracer and one histogram: until an SDK is
# set, the API keeps each meter and instrument asked of it (to bind them later), so one per
# client would grow with every client made.
@functools.cache
def _global_tracer() -> Tracer:
    return _tracer(None)


@functools.cache
def _global_histogram() -> Histogram:
    return _histogram(None)


#: How often a client asks whether an OpenTelemetry SDK has been set up since it was made.
_LOOK_EVERY: Final = 1.0


class _Setup:
    """What every turn of one `OpenTelemetry` reports with."""

    __slots__ = ("_next_look", "histogram", "live", "record_content", "span_name", "tracer")

    def __init__(
        self,
        tracer: Tracer,
        histogram: Histogram,
        span_name: str,
        *,
        record_content: bool,
        live: bool,
    ) -> None:
        self.tracer = tracer
        self.histogram = histogram
        self.span_name = span_name
        self.record_content = record_content
        #: Whether turns are reported: providers of the caller's, or a global tracer provider
        #: set (an SDK configured), when the client was made or since.
        self.live = live
        self._next_look = 0.0

    def is_live(self) -> bool:
        """Whether to report this turn: until an SDK is set up, nothing would record it.

        Reporting to the API's no-op providers cost 2.5 µs a turn (the span, its attributes,
        the histogram), 2 to 3% of a turn on aiohttp, and asking the API whether an SDK is set
        costs 2 µs (it reads the environment): until then, it is asked once a second.
        """
        if self.live:
            return True
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + _LOOK_EVERY
            self.live = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return self.live


class OpenTelemetry:
    """Reports every turn to OpenTelemetry: a span, attempt events, and a duration histogram.

    A client uses one by itself when `opentelemetry-api` is installed, with the global tracer
    and meter providers. Make one to choose other providers or to record content::

        AsyncQuickchat(telemetry=OpenTelemetry(record_content=True))

    Args:
        tracer_provider: where spans go (default: the global one, a no-op until an SDK is set).
        meter_provider: where the histogram goes (default: the global one).
        record_content: record the user's message and the reply on the span
            (`gen_ai.input.messages`, `gen_ai.output.messages`). None reads
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true`` turns it on).
            Credentials are never recorded.
        agent_name: the AI Agent's name, for the span's name (``invoke_agent {agent_name}``)
            and `gen_ai.agent.name`; without one, spans are named ``invoke_agent``.
    """

    __slots__ = ("_attributes", "_setup", "agent_name", "record_content")

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        record_content: bool | None = None,
        agent_name: str | None = None,
    ) -> None:
        histogram = _global_histogram() if meter_provider is None else _histogram(meter_provider)
        self.record_content = _content_from_env() if record_content is None else record_content
        self.agent_name = agent_name
        self._setup = _Setup(
            _global_tracer() if tracer_provider is None else _tracer(tracer_provider),
            histogram,
            f"{_OPERATION} {agent_name}" if agent_name else _OPERATION,
            record_content=self.record_content,
            live=tracer_provider is not None or meter_provider is not None,
        )
        self._attributes: dict[tuple[str, str], dict[str, AttributeValue]] = {}

    def __repr__(self) -> str:
        return f"<OpenTelemetry record_content={self.record_content!r}>"

    def _base(self, config: ClientConfig) -> dict[str, AttributeValue]:
        """The attributes every span and measurement of this client's turns carry."""
        key = (config.scenario_id, config.base_url)
        attributes = self._attributes.get(key)
        if attributes is None:
            address, port = _server(config.base_url)
            attributes = self._attributes[key] = {
                "gen_ai.operation.name": _OPERATION,
                "gen_ai.provider.name": _PROVIDER,
                "gen_ai.agent.id": config.scenario_id,
                "server.address": address,
                "server.port": port,
            }
            if self.agent_name:
                attributes["gen_ai.agent.name"] = self.agent_name
        return attributes

    def turn(self, config: ClientConfig, request: ChatRequest, conv_id: str | None) -> TurnTrace:
        """Open the span of one turn (none while no OpenTelemetry SDK is set up)."""
        if not self._setup.is_live():
            return NO_TELEMETRY.turn(config, request, conv_id)
        return _Trace(self._setup, self._base(config), request, conv_id)


class _Trace:
    """The span of one turn, current while the turn runs."""

    __slots__ = (
        "_attempts",
        "_base",
        "_conv_id",
        "_request",
        "_setup",
        "_span",
        "_started",
        "_token",
    )

    def __init__(
        self,
        setup: _Setup,
        base: dict[str, AttributeValue],
        request: ChatRequest,
        conv_id: str | None,
    ) -> None:
        self._setup = setup
        self._base = base
        self._request = request
        self._conv_id = conv_id
        self._attempts = 0
        self._token: Token[Context] | None = None
        self._span: Span = trace.INVALID_SPAN
        self._started = 0.0

    def __enter__(self) -> Self:
        setup = self._setup
        attributes = self._base
        if self._conv_id is not None:
            attributes = {**attributes, "gen_ai.conversation.id": self._conv_id}
        span = self._span = setup.tracer.start_span(
            setup.span_name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        # A no-op tracer (no SDK configured) hands back the current span, with no trace at all
        # the invalid one: nothing to make current then.
        if span is not trace.INVALID_SPAN:
            self._token = otel_context.attach(trace.set_span_in_context(span))
        if setup.record_content and self._request.text is not None and span.is_recording():
            span.set_attribute("gen_ai.input.messages", _messages("user", self._request.text))
        self._started = time.perf_counter()
        return self

    def attempt(self, num: int) -> None:
        """An attempt starts: an event, with `http.request.resend_count` from the second on."""
        self._attempts = num
        self._span.add_event(
            _ATTEMPT_EVENT, {"http.request.resend_count": num - 1} if num > 1 else None
        )

    def attempt_failed(self, num: int, error: QuickchatError) -> None:
        """A failed attempt: an event with its error type; was the message perhaps recorded?"""
        attributes: dict[str, AttributeValue] = {
            "error.type": type(error).__qualname__,
            "quickchat.outcome_unknown": error.outcome_unknown,
        }
        if num > 1:
            attributes["http.request.resend_count"] = num - 1
        if isinstance(error, APIStatusError):
            attributes["http.response.status_code"] = error.status_code
        if isinstance(error, RateLimitError | ServiceUnavailableError) and error.retry_after:
            attributes["quickchat.retry_after"] = error.retry_after
        self._span.add_event(_FAILED_EVENT, attributes)

    def replied(self, reply: Reply) -> None:
        """The reply arrived: the conversation's ID (new conversations learn it here), the reply."""
        span = self._span
        if reply.conv_id != self._conv_id:
            span.set_attribute("gen_ai.conversation.id", reply.conv_id)
        if self._setup.record_content and span.is_recording():
            span.set_attribute(
                "gen_ai.output.messages", _messages("assistant", reply.html, finish_reason="stop")
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._started
        span: Span = self._span
        measured: Mapping[str, AttributeValue] = self._base
        if exc is not None:
            error_type = _error_type(exc)
            span.set_attribute("error.type", error_type)
            if isinstance(exc, QuickchatError):
                span.set_attribute("quickchat.outcome_unknown", exc.outcome_unknown)
            elif error_type == _CANCELLED:
                # Cancelled mid-attempt: the message may have gone out.
                span.set_attribute("quickchat.outcome_unknown", self._attempts > 0)
            span.set_status(Status(StatusCode.ERROR, error_type))
            measured = {**self._base, "error.type": error_type}
        if self._attempts > 1:
            span.set_attribute("http.request.resend_count", self._attempts - 1)
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
        self._setup.histogram.record(duration, measured)


def _error_type(exc: BaseException) -> str:
    """`error.type`: the SDK error's class, or ``cancelled``."""
    if isinstance(exc, QuickchatError):
        return type(exc).__qualname__
    try:
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
    except Exception:  # noqa: BLE001 -- no event loop to ask: not a cancellation
        cancelled = False
    return _CANCELLED if cancelled else type(exc).__qualname__
