"""Property: whatever a server answers, `say()` returns a Reply or raises a documented error.

Arbitrary statuses, headers (Retry-After among them) and bodies go through httpx2's mock
transport, attempt after attempt; the SDK's answer must be a Reply for a 2xx, one of the
documented exceptions otherwise, after exactly the attempts the retry policy allows.
"""

from __future__ import annotations

import httpx2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import quickchat_async._exceptions as errors_module
from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    AsyncQuickchat,
    QuickchatError,
    RateLimitError,
    Reply,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from quickchat_async._wire import MAX_RETRY_AFTER, parse_retry_after
from tests.conftest import SCENARIO_ID

from .rule import API_KEY, TALLY, TOKEN, formatted_with_locals
from .strategies import STATUSES, bodies, bounded, headers


pytestmark = pytest.mark.anyio

#: The exceptions documented for `say()`: the error tree, less what only stores raise.
DOCUMENTED = tuple(
    cls
    for name in errors_module.__all__
    if isinstance(cls := getattr(errors_module, name), type)
    and not name.startswith("Store")
    and name not in {"ValidationError", "ClientClosedError", "UnconfirmedStartError"}
)
MAX_RETRIES = 2

responses = st.tuples(STATUSES, headers, bodies)


def retried(status: int, header_map: dict[str, bytes]) -> bool:
    """Whether the policy retries this answer: a 429 or 503 that asks for a bearable wait."""
    if status not in {429, 503}:
        return False
    value = httpx2.Headers(header_map).get("retry-after")
    seconds = parse_retry_after(value)
    return seconds is None or seconds <= MAX_RETRY_AFTER


class TestAnyResponse:
    @bounded(150)
    @given(st.lists(responses, min_size=1, max_size=MAX_RETRIES + 1), st.booleans())
    @example([(200, {"content-length": "²".encode()}, b'{"reply": "Hi", "conv_id": "c-1"}')], False)
    @example([(200, {"content-encoding": b"gzip"}, b"not gzip")], True)
    @example([(429, {"retry-after": b"1"}, b""), (200, {}, b"{}")], False)
    @example([(503, {"retry-after": b"3600"}, b"")], False)
    async def test_only_documented_outcomes(self, answers, legacy):
        """A Reply for a 2xx, else a documented error; retried only as the policy says."""
        TALLY["bad inputs tried"] += 1
        served: list[int] = []
        # A server may echo the credential it was sent, not one it never saw.
        other = (TOKEN if legacy else API_KEY).encode()

        def answer(request: httpx2.Request) -> httpx2.Response:
            status, header_map, body = answers[min(len(served), len(answers) - 1)]
            served.append(status)
            body = body.replace(other, b"another credential")
            return httpx2.Response(status, headers=list(header_map.items()), content=body)

        credential = {"api_key": API_KEY} if legacy else {"token": TOKEN}
        async with (
            httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http,
            AsyncQuickchat(
                scenario_id=SCENARIO_ID, http_client=http, max_retries=MAX_RETRIES, **credential
            ) as client,
        ):
            try:
                reply = await client.say("Hello")
            except QuickchatError as exc:
                error: QuickchatError | None = exc
            else:
                error = None

        assert 1 <= len(served) <= MAX_RETRIES + 1
        # Every attempt but the last got an answer the policy retries.
        for i in range(len(served) - 1):
            status, header_map, _ = answers[min(i, len(answers) - 1)]
            assert retried(status, header_map), f"attempt {i + 1} ({status}) was retried"
        last_status, last_headers, _ = answers[min(len(served) - 1, len(answers) - 1)]

        if error is None:
            assert isinstance(reply, Reply)
            assert 200 <= last_status < 300
            assert reply.conv_id
            return
        if len(served) <= MAX_RETRIES:
            assert not retried(last_status, last_headers), "stopped although it could retry"
        check_documented(error, last_status, len(served), API_KEY if legacy else TOKEN)


def check_documented(error: QuickchatError, status: int, attempts: int, secret: str) -> None:
    """A documented type that fits the last answer, with a useful, credential-free message."""
    assert isinstance(error, DOCUMENTED), f"undocumented {type(error).__name__}: {error!r}"
    assert type(error) in DOCUMENTED
    if isinstance(error, APIStatusError):
        assert error.status_code == status
        assert not 200 <= status < 300
        if isinstance(error, (RateLimitError, ServiceUnavailableError)) and attempts > 1:
            assert f"after {attempts} attempts" in error.message
    elif isinstance(error, UnexpectedResponseError):
        assert 200 <= status < 300
        assert error.outcome_unknown
    else:  # a body that would not decode (a bad gzip stream, say)
        assert isinstance(error, APIConnectionError)
        assert error.outcome_unknown
    assert len(error.message) >= 40
    for text in (error.message, repr(error), formatted_with_locals(error)):
        assert secret not in text
