"""Every engine's errors have their place in the SDK's error tree, none left to a catch-all.

As httpx's own tests/test_exceptions.py does for httpcore: each exception class an engine can
raise while sending is listed in its transport's mapping, so a new class in a new release of
the engine fails here instead of reaching users as "failed talking to".
"""

from __future__ import annotations

import inspect
import traceback
from types import ModuleType

import aiohttp
import httpx
import httpx2
import pytest

from quickchat_async import (
    APIConnectionError,
    APITimeoutError,
    Httpx2Transport,
    HttpxTransport,
)
from quickchat_async._transports._aiohttp import _error, _tables
from quickchat_async._transports._base import scrubbed


def exception_classes(module: ModuleType, base: type[BaseException]) -> list[type[BaseException]]:
    """The exception classes a module exports that derive from `base` (the base aside)."""
    return [
        value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, base)
        and value is not base
    ]


def ids(cls: type[BaseException]) -> str:
    return cls.__name__


@pytest.mark.parametrize("exc_type", exception_classes(httpx2, httpx2.RequestError), ids=ids)
def test_every_httpx2_error_has_a_mapping(exc_type):
    """Each error httpx2 raises while sending is listed explicitly in Httpx2Transport's table."""
    engine = Httpx2Transport.engine
    mapped = {t for t, _ in (*engine.not_sent, *engine.maybe_sent)}

    assert exc_type in mapped


@pytest.mark.parametrize("exc_type", exception_classes(httpx, httpx.RequestError), ids=ids)
def test_every_httpx_error_has_a_mapping(exc_type):
    """Each error httpx raises while sending is listed explicitly in HttpxTransport's table."""
    engine = HttpxTransport.engine
    mapped = {t for t, _ in (*engine.not_sent, *engine.maybe_sent)}

    assert exc_type in mapped


#: aiohttp errors that sending a POST without following redirects cannot raise: the redirect
#: errors, a scheme the base URL check refuses, and an upload future nobody awaits.
NOT_RAISED_BY_SEND = {
    aiohttp.RedirectClientError,
    aiohttp.NonHttpUrlClientError,
    aiohttp.NonHttpUrlRedirectClientError,
    aiohttp.UploadAbortedError,
}


@pytest.mark.parametrize(
    "exc_type",
    [
        cls
        for cls in exception_classes(aiohttp, aiohttp.ClientError)
        if cls not in NOT_RAISED_BY_SEND
    ],
    ids=ids,
)
def test_every_aiohttp_error_has_a_mapping(exc_type):
    """Each error aiohttp may raise while sending falls under a row of AiohttpTransport's table."""
    not_sent, maybe_sent = _tables()

    assert any(issubclass(exc_type, row) for row, _ in (*not_sent, *maybe_sent))


@pytest.mark.parametrize(
    ("engine", "module"), [(Httpx2Transport.engine, httpx2), (HttpxTransport.engine, httpx)]
)
def test_httpx_family_tables_most_specific_first(engine, module):
    """No row is hidden behind an earlier, more general one."""
    for table in (engine.not_sent, engine.maybe_sent):
        rows = [row for row, _ in table]
        for i, row in enumerate(rows):
            assert not any(issubclass(row, earlier) for earlier in rows[:i]), row
    assert engine.name == module.__name__


@pytest.mark.parametrize(
    ("engine", "timeout"),
    [
        (Httpx2Transport.engine, httpx2.ReadTimeout("slow")),
        (HttpxTransport.engine, httpx.ReadTimeout("slow")),
    ],
)
def test_timeouts_are_timeout_errors(engine, timeout):
    """An engine's timeout is an APITimeoutError, also a TimeoutError."""
    error = engine.translate(timeout, url="u", may_be_sent=True)

    assert isinstance(error, APITimeoutError)
    assert isinstance(error, TimeoutError)


@pytest.mark.parametrize(
    ("engine", "error"),
    [
        (Httpx2Transport.engine, httpx2.ReadError("reset")),
        (HttpxTransport.engine, httpx.ReadError("reset")),
    ],
)
def test_nothing_sent_yet(engine, error):
    """A read error before the request went out (the engine's trace says so) is safe."""
    translated = engine.translate(error, url="u", may_be_sent=False)

    assert not translated.outcome_unknown
    assert "not sent" in translated.message


def test_an_unlisted_aiohttp_error_is_maybe_sent():
    """An aiohttp error no row names is reported as 'failed talking to', as it may be sent."""
    error = _error(aiohttp.RedirectClientError("odd"), "u", may_be_sent=True)

    assert type(error) is APIConnectionError
    assert "failed talking to" in error.message
    assert error.outcome_unknown


def test_scrubbed_clears_engine_frame_locals():
    """scrubbed() wipes the locals of finished frames in the error and its chain."""

    def engine(header: str) -> None:
        try:
            raise OSError("socket closed")  # noqa: TRY301 -- a chained error is the point
        except OSError as inner:
            raise httpx2.WriteError("write failed") from inner

    try:
        engine("Bearer " + "tok-CANARY-in-a-frame")
    except httpx2.WriteError as exc:
        error = exc

    def engine_locals() -> str:
        stack = traceback.TracebackException.from_exception(error, capture_locals=True).stack
        return "".join(str(frame.locals) for frame in stack if frame.name == "engine")

    assert "tok-CANARY-in-a-frame" in engine_locals()
    assert scrubbed(error) is error
    assert "tok-CANARY-in-a-frame" not in engine_locals()
    assert "in engine" in "".join(traceback.format_exception(error))
