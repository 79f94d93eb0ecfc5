"""OpenTelemetry for the SDK's turns (extra ``[otel]``): a span per turn and a duration histogram.

A client reports to OpenTelemetry by itself when `opentelemetry-api` is installed, through the
global tracer and meter providers. `OpenTelemetry` is for choosing other providers, naming the
AI Agent, or recording message content::

    from quickchat_async import AsyncQuickchat
    from quickchat_async.otel import OpenTelemetry

    client = AsyncQuickchat(telemetry=OpenTelemetry(record_content=True))

Importing this module needs `opentelemetry-api` (``pip install 'quickchat-async[otel]'``).
"""

try:
    from ._otel import CONTENT_ENV, DURATION_BUCKETS, OpenTelemetry
except ModuleNotFoundError as exc:  # pragma: no cover -- the tests have the API
    if exc.name is None or not exc.name.startswith("opentelemetry"):
        raise
    msg = "quickchat_async.otel needs opentelemetry-api: pip install 'quickchat-async[otel]'."
    raise ImportError(msg) from exc


__all__ = ["CONTENT_ENV", "DURATION_BUCKETS", "OpenTelemetry"]
