"""What each fault of the emulator must become in the blocking client, whatever its transport.

One table, checked by pytest for the httpx2 and httpx transports (in process and served) and by
`gevent_run.py` for the gevent transport under gevent's monkey-patching: the error class, whether
the message may have landed, how many requests the server saw and how many turns it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from quickchat_async import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    Quickchat,
    QuickchatError,
    RateLimitError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from tests.conftest import with_locals


@attrs.frozen
class Case:
    """A scripted fault, the client's options, and what must come of one `say()`.

    Attributes:
        name: the test id.
        script: the faults of the next requests, as `POST /_emulator/faults` takes them.
        error: the exact error class raised, or None for a reply.
        unknown: the error's `outcome_unknown`.
        requests: how many requests the server received.
        recorded: how many user messages it recorded.
        options: client options.
        within: the turn ends within this many seconds (deadlines hold).
    """

    name: str
    script: tuple[object, ...]
    error: type[QuickchatError] | None
    unknown: bool = False
    requests: int = 1
    recorded: int = 0
    options: dict[str, Any] = attrs.field(factory=dict)
    within: float = 10.0


_NOW = {"kind": "rate_limit", "retry_after": "0"}
CASES = (
    Case("429 then a reply", (_NOW,), None, requests=2, recorded=1),
    Case("503 then a reply", ({"kind": "unavailable", "retry_after": "0"},), None, requests=2,
         recorded=1),
    Case("429 three times", (_NOW,) * 3, RateLimitError, requests=3),
    Case("429 asking for two minutes", ({"kind": "rate_limit", "retry_after": "120"},),
         RateLimitError),
    Case("503 three times", ({"kind": "unavailable", "retry_after": None},) * 3,
         ServiceUnavailableError, requests=3),
    Case("429, no retries", (_NOW,), RateLimitError, options={"max_retries": 0}),
    Case("500 before recording", ("error_before",), InternalServerError, unknown=True),
    Case("500 after recording", ("error_after",), InternalServerError, unknown=True, recorded=1),
    Case("500, ambiguous retried", ("error_before",), None, requests=2, recorded=1,
         options={"retry_ambiguous": True}),
    Case("502 from a proxy", ("html_502",), InternalServerError, unknown=True),
    Case("dropped before", ("drop_before",), APIConnectionError, unknown=True),
    Case("dropped after", ("drop_after",), APIConnectionError, unknown=True, recorded=1),
    Case("dropped after, ambiguous retried", ("drop_after",), None, requests=2, recorded=2,
         options={"retry_ambiguous": True}),
    Case("truncated body", ("truncated",), APIConnectionError, unknown=True, recorded=1),
    Case("reset mid-body", ("reset_mid_body",), APIConnectionError, unknown=True, recorded=1),
    Case("not JSON", ("not_json",), UnexpectedResponseError, unknown=True, recorded=1),
    Case("no reply field", ("missing_reply",), UnexpectedResponseError, unknown=True,
         recorded=1),
    Case("huge body", ({"kind": "huge_body", "size": 64 * 1024},), ResponseTooLargeError,
         unknown=True, recorded=1, options={"max_response_bytes": 16 * 1024}),
    Case("slow headers", ({"kind": "slow_headers", "delay": 2.0},), APITimeoutError,
         unknown=True, recorded=1, options={"timeout": 0.4, "max_retries": 0}, within=1.5),
    Case("dripping body", ({"kind": "drip", "chunk_size": 2, "interval": 0.05},),
         APITimeoutError, unknown=True, recorded=1, options={"timeout": 0.4, "max_retries": 0},
         within=1.5),
    Case("endless body", ({"kind": "endless", "chunk_size": 16, "interval": 0.05},),
         APITimeoutError, unknown=True, recorded=1, options={"timeout": 0.4, "max_retries": 0},
         within=1.5),
)  # fmt: skip


@attrs.frozen
class Outcome:
    """What one `say()` did: the error class (or None), its facts, and how long it took."""

    error: str | None
    unknown: bool | None
    message: str
    formatted: str
    elapsed: float


def play(case: Case, make_client: Callable[..., Quickchat]) -> Outcome:
    """Say one message through a client made with the case's options; report what happened."""
    with make_client(**case.options) as client:
        start = time.monotonic()
        try:
            client.say(f"through {case.name}")
        except QuickchatError as exc:
            elapsed = time.monotonic() - start
            formatted = with_locals(exc)
            return Outcome(type(exc).__name__, exc.outcome_unknown, str(exc), formatted, elapsed)
        return Outcome(None, None, "", "", time.monotonic() - start)


def check(case: Case, outcome: Outcome, *, requests: int, recorded: int) -> None:
    """The outcome, and what the server saw, are what the case says."""
    expected = None if case.error is None else case.error.__name__
    assert outcome.error == expected, (case.name, outcome.error, outcome.message)
    if case.error is not None:
        assert outcome.unknown is case.unknown, (case.name, outcome.message)
        assert outcome.message
    assert outcome.elapsed < case.within, (case.name, outcome.elapsed)
    assert (requests, recorded) == (case.requests, case.recorded), case.name
