"""The error tree: one base, standard-library bases where they fit, context as attributes.

Which status, text or engine failure becomes which error is tested beside the code that
decides it: tests/test_wire.py and tests/transports/.
"""

from __future__ import annotations

import inspect

import pytest

import quickchat_async
from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConversationNotFoundError,
    HTTPResponse,
    InternalServerError,
    PermissionDeniedError,
    QuickchatError,
    RateLimitError,
    Reply,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    StoreConflictError,
    StoreError,
    StoreLockTimeoutError,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
)


RESPONSE = HTTPResponse(500, {}, b"oops")


def status_error(cls: type[APIStatusError], **extra: object) -> APIStatusError:
    return cls("m", status_code=500, server_message="oops", response=RESPONSE, **extra)  # type: ignore[arg-type]


def test_every_error_is_a_quickchat_error():
    """One base class catches everything the SDK raises."""
    errors = [
        value
        for name in quickchat_async.__all__
        if inspect.isclass(value := getattr(quickchat_async, name))
        and issubclass(value, BaseException)
    ]

    assert len(errors) == 20
    for error in errors:
        assert issubclass(error, QuickchatError), error


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (ValidationError, (QuickchatError, ValueError)),
        (ClientClosedError, (QuickchatError, RuntimeError)),
        (UnconfirmedStartError, (QuickchatError,)),
        (APITimeoutError, (APIConnectionError, TimeoutError)),
        (ResponseTooLargeError, (UnexpectedResponseError,)),
        (ConversationNotFoundError, (BadRequestError, APIStatusError)),
        (AuthenticationError, (APIStatusError,)),
        (PermissionDeniedError, (APIStatusError,)),
        (ScenarioNotFoundError, (APIStatusError,)),
        (RateLimitError, (APIStatusError,)),
        (ServiceUnavailableError, (InternalServerError, APIStatusError)),
        (StoreLockTimeoutError, (StoreError, TimeoutError)),
        (StoreConflictError, (StoreError,)),
    ],
)
def test_the_tree(error, bases):
    """Each error sits where the tree in the module docstring draws it."""
    for base in bases:
        assert issubclass(error, base)


def test_standard_library_bases():
    """Bad input is a ValueError and timeouts are TimeoutErrors, so generic handlers work."""
    with pytest.raises(ValueError, match="bad"):
        raise ValidationError("bad")
    with pytest.raises(TimeoutError):
        raise APITimeoutError("slow", url="u")
    with pytest.raises(TimeoutError):
        raise StoreLockTimeoutError("slow")


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (QuickchatError("m"), False),
        (ValidationError("m"), False),
        (APIConnectionError("m"), False),
        (APIConnectionError("m", outcome_unknown=True), True),
        (UnexpectedResponseError("m", status_code=200, body=""), True),
        (ResponseTooLargeError("m", status_code=200, body=""), True),
        (status_error(BadRequestError), False),
        (status_error(InternalServerError), True),
        (status_error(ServiceUnavailableError, retry_after=None), False),
        (status_error(RateLimitError, retry_after=None), False),
    ],
)
def test_outcome_unknown(error, unknown):
    """Each error says whether the server may have recorded the message."""
    assert error.outcome_unknown is unknown


def test_context_is_kept():
    """Each error keeps its context as attributes, keyword-only."""
    connection = APITimeoutError("m", url="https://app.quickchat.ai/chat", outcome_unknown=True)
    unexpected = UnexpectedResponseError("m", status_code=200, body="x")
    limited = status_error(RateLimitError, retry_after=7.0)
    reply = Reply(conv_id="c", html="hi")

    assert (connection.message, connection.url) == ("m", "https://app.quickchat.ai/chat")
    assert (unexpected.status_code, unexpected.body) == (200, "x")
    assert (limited.status_code, limited.server_message, limited.response) == (
        500,
        "oops",
        RESPONSE,
    )
    assert limited.retry_after == 7.0  # type: ignore[attr-defined]
    assert status_error(ServiceUnavailableError, retry_after=3.0).retry_after == 3.0  # type: ignore[attr-defined]
    assert StoreError("m").reply is None
    assert StoreConflictError("m", reply=reply).reply is reply


def test_str_and_repr():
    """str() is the message; the repr names the class and quotes the message."""
    error = UnexpectedResponseError("Quickchat answered 200 but ...", status_code=200, body="x")

    assert str(error) == error.message == "Quickchat answered 200 but ..."
    assert repr(error) == "UnexpectedResponseError('Quickchat answered 200 but ...')"
