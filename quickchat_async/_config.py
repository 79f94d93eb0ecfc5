"""A client's configuration: the limits of one attempt, and everything a request is built from.

`ClientConfig.build()` turns the client's constructor arguments (and the `QUICKCHAT_*`
environment variables they fall back to) into one frozen value that the wire core, the sender
and every transport read. The credential goes into the request headers (current flavor) or the
start of every body (legacy flavor) here, once; neither ever shows in a repr.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Final, TypedDict

import attrs

from ._types import NOT_GIVEN, Flavor, JSONValue, Secret
from ._validation import (
    check_base_url,
    check_count,
    check_credential,
    check_extra_body,
    check_headers,
    check_no_secret,
    check_scenario_id,
    check_seconds,
)
from ._version import __version__


__all__ = [
    "CURRENT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "LEGACY_BASE_URL",
    "Call",
    "CallOptions",
    "ClientConfig",
    "Timeout",
]

CURRENT_BASE_URL: Final = "https://app.quickchat.ai"
LEGACY_BASE_URL: Final = "https://chat.quickchat.ai"
#: The largest reply body the SDK reads by default. Chat replies are a few KB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 1024 * 1024
#: Error pages must fit, so the body limit cannot be set lower than this.
MIN_RESPONSE_BYTES: Final = 1024
#: The User-Agent of a request whose transport does not name its engine.
SDK_USER_AGENT: Final = f"quickchat-async/{__version__}"

_JSON_STRING: Final = json.JSONEncoder(ensure_ascii=False).encode


@attrs.frozen(slots=True)
class Timeout:
    """How long one attempt may take.

    Attributes:
        total: the whole attempt (waiting for a connection slot, connecting, sending, waiting for
            and reading the reply) must end within this many seconds. It also bounds a server that
            drips bytes, which a per-read timeout alone would not catch. None: no limit.
        connect: opening a connection must succeed within this many seconds. None: no limit.

    Raises:
        ValidationError: a limit that is not a positive number of seconds or None.
    """

    total: float | None = 30.0
    connect: float | None = 5.0

    def __attrs_post_init__(self) -> None:
        check_seconds(self.total, name="Timeout.total", optional=True)
        check_seconds(self.connect, name="Timeout.connect", optional=True)

    @classmethod
    def of(cls, value: object) -> Timeout:
        """Build a Timeout from a client's `timeout` argument: seconds, a Timeout, or None.

        A number of seconds bounds the attempt, and its connecting to at most 5 s of it.

        Raises:
            ValidationError: neither a number of seconds, a Timeout nor None.
        """
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(total=None, connect=None)
        total = check_seconds(value, name="timeout")
        return cls(total=total, connect=min(5.0, total) if math.isfinite(total) else 5.0)


#: The default limits of one attempt: 30 s in all, 5 s of it to connect.
DEFAULT_TIMEOUT: Final = Timeout(total=30.0, connect=5.0)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _credential(token: Secret, api_key: Secret) -> tuple[Flavor, Secret]:
    """The flavor and the credential: the arguments', or else the environment's."""
    where = "both token= and api_key= were given"
    if token.reveal() is None and api_key.reveal() is None:
        token = Secret(_env("QUICKCHAT_API_TOKEN"))
        api_key = Secret(_env("QUICKCHAT_API_KEY"))
        where = "QUICKCHAT_API_TOKEN and QUICKCHAT_API_KEY are both set"
    return check_credential(token, api_key, where=where)


def _base_url(base_url: object, flavor: Flavor) -> object:
    """The base URL given, else the environment's, else the flavor's own."""
    if base_url is None:
        base_url = _env("QUICKCHAT_BASE_URL")
    if base_url is None:
        base_url = CURRENT_BASE_URL if flavor is Flavor.CURRENT else LEGACY_BASE_URL
    return base_url


class CallOptions(TypedDict, total=False):
    """Options of one call (`say()`), each replacing the client's setting for that turn only.

    Attributes:
        timeout: seconds each attempt may take, a `Timeout`, or None for no limit.
        max_retries: how many times a failed request that is safe to resend is retried.
        deadline: seconds the whole turn may take: every attempt, every backoff and every
            `Retry-After` wait (None: no bound beyond the attempts' own).
        extra_headers: headers added to this request (not the ones the SDK sets).
        extra_body: JSON fields added to this request's body, for fields Quickchat may add
            later; the documented fields cannot be replaced this way.
    """

    timeout: float | Timeout | None
    max_retries: int
    deadline: float | None
    extra_headers: Mapping[str, str]
    extra_body: Mapping[str, JSONValue]


_CALL_OPTIONS: Final = frozenset(CallOptions.__annotations__)
_OPTIONS: Final = ", ".join(sorted(_CALL_OPTIONS))


@attrs.frozen(kw_only=True, slots=True)
class Call:
    """The settings one turn is sent with: the client's, or its per-call options.

    Attributes:
        timeout: the limits of each attempt.
        max_retries: how many times a failed request that is safe to resend is retried.
        deadline: seconds the whole turn may take (None: no bound beyond the attempts').
        headers: the request's headers, authentication included (never shown).
        extra_body: fields added to the body, if any.
    """

    timeout: Timeout
    max_retries: int
    deadline: float | None
    headers: Mapping[str, str] = attrs.field(repr=False)
    extra_body: Mapping[str, JSONValue] | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True, slots=True)
class ClientConfig:
    """Everything a client's requests are built from, checked once.

    Attributes:
        flavor: the API flavor, chosen by the credential.
        scenario_id: the AI Agent's ID.
        base_url: where the Chat endpoint lives, without a trailing slash.
        url: the Chat endpoint itself (`{base_url}/chat`).
        timeout: the limits of one attempt.
        max_retries: how many times a failed request that is safe to resend is retried.
        retry_ambiguous: also retry failures after which the message may have been recorded.
        deadline: seconds a whole turn may take, every attempt and wait included (None: no
            bound beyond the attempts' own).
        max_connections: how many requests may be in flight at once.
        max_response_bytes: the largest response body read.
        headers: the headers of every request, authentication included (never shown).
        body_prefix: the start of every JSON body, up to and including the comma after
            `scenario_id` (the legacy `api_key` comes first; never shown).
        secrets: the credential, masked wherever server text is quoted (never shown).
    """

    flavor: Flavor
    scenario_id: str
    base_url: str
    url: str
    timeout: Timeout
    max_retries: int
    retry_ambiguous: bool
    deadline: float | None
    max_connections: int
    max_response_bytes: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    body_prefix: bytes = attrs.field(repr=False)
    secrets: tuple[str, ...] = attrs.field(repr=False)

    @classmethod
    def build(
        cls,
        *,
        token: Secret,
        api_key: Secret,
        scenario_id: object,
        base_url: object,
        timeout: object,
        max_retries: object,
        retry_ambiguous: object,
        deadline: object,
        default_headers: object,
        max_connections: object,
        max_response_bytes: object,
    ) -> ClientConfig:
        """Check the client's arguments, falling back to `QUICKCHAT_*` variables when unset.

        Raises:
            ValidationError: no credential, both, no scenario_id, or a bad argument.
        """
        flavor, secret = _credential(token, api_key)
        del token, api_key
        scenario = check_scenario_id(
            _env("QUICKCHAT_SCENARIO_ID") if scenario_id is None else scenario_id
        )
        base = check_base_url(_base_url(base_url, flavor))
        headers = _merged_headers(
            {
                "Content-Type": "application/json",
                "Accept": "application/json, text/plain",
                # Only what the transports inflate within max_response_bytes (no br, zstd).
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": SDK_USER_AGENT,
            },
            check_headers(default_headers),
        )
        return cls._with_credential(
            secret,
            flavor=flavor,
            scenario_id=scenario,
            base_url=base,
            url=f"{base}/chat",
            timeout=DEFAULT_TIMEOUT if timeout is NOT_GIVEN else Timeout.of(timeout),
            max_retries=check_count(max_retries, name="max_retries", minimum=0),
            retry_ambiguous=bool(retry_ambiguous),
            deadline=check_seconds(deadline, name="deadline", optional=True),
            max_connections=check_count(max_connections, name="max_connections", minimum=1),
            max_response_bytes=check_count(
                max_response_bytes, name="max_response_bytes", minimum=MIN_RESPONSE_BYTES
            ),
            headers=headers,
        )

    @classmethod
    def _with_credential(
        cls,
        secret: Secret,
        *,
        flavor: Flavor,
        scenario_id: str,
        headers: dict[str, str],
        **rest: object,
    ) -> ClientConfig:
        """Put the credential where requests need it; nothing after this can fail."""
        prefix = '{"scenario_id":' + _JSON_STRING(scenario_id) + ","
        if flavor is Flavor.CURRENT:
            headers["Authorization"] = f"Bearer {secret.reveal()}"
        else:
            prefix = '{"api_key":' + _JSON_STRING(secret.reveal()) + "," + prefix[1:]
        return cls(
            flavor=flavor,
            scenario_id=scenario_id,
            headers=headers,
            body_prefix=prefix.encode(),
            secrets=(str(secret.reveal()),),
            **rest,  # type: ignore[arg-type]
        )

    def with_options(
        self,
        *,
        timeout: object = NOT_GIVEN,
        max_retries: object = NOT_GIVEN,
        retry_ambiguous: object = NOT_GIVEN,
        deadline: object = NOT_GIVEN,
        default_headers: object = NOT_GIVEN,
    ) -> ClientConfig:
        """A copy with other settings; the credential and the endpoint stay.

        `default_headers` are merged over the current ones.

        Raises:
            ValidationError: a bad value, named.
        """
        extra = None
        if default_headers is not NOT_GIVEN:
            extra = check_headers(default_headers)
            check_no_secret(extra, Secret(self.secrets), name="default_headers")
        return attrs.evolve(
            self,
            timeout=self.timeout if timeout is NOT_GIVEN else Timeout.of(timeout),
            max_retries=self.max_retries
            if max_retries is NOT_GIVEN
            else check_count(max_retries, name="max_retries", minimum=0),
            retry_ambiguous=self.retry_ambiguous
            if retry_ambiguous is NOT_GIVEN
            else bool(retry_ambiguous),
            deadline=self.deadline
            if deadline is NOT_GIVEN
            else check_seconds(deadline, name="deadline", optional=True),
            headers=self.headers if extra is None else _merged_headers(dict(self.headers), extra),
        )

    @functools.cached_property
    def default_call(self) -> Call:
        """The settings of a turn sent with no per-call options."""
        return Call(
            timeout=self.timeout,
            max_retries=self.max_retries,
            deadline=self.deadline,
            headers=self.headers,
        )

    def call(self, options: CallOptions) -> Call:
        """The settings of a turn sent with these per-call options.

        Raises:
            ValidationError: a bad value, named; an `extra_body` field that would replace a
                documented one, or an extra header or field that carries the credential.
            TypeError: an option that does not exist.
        """
        if not options:
            return self.default_call
        unknown = options.keys() - _CALL_OPTIONS
        if unknown:
            msg = f"unexpected keyword argument {min(unknown)!r} (per-call options: {_OPTIONS})"
            raise TypeError(msg)
        # The headers (with the credential) are read only once nothing can fail: a frame that
        # raises must hold no credential in a local (tracebacks formatted with locals).
        extra_headers = None
        if "extra_headers" in options:
            extra_headers = check_headers(options["extra_headers"], name="extra_headers")
            check_no_secret(extra_headers, Secret(self.secrets), name="extra_headers")
        extra_body = None
        if "extra_body" in options:
            extra_body = check_extra_body(options["extra_body"])
            check_no_secret(extra_body, Secret(self.secrets), name="extra_body")
        return Call(
            timeout=Timeout.of(options["timeout"]) if "timeout" in options else self.timeout,
            max_retries=check_count(options["max_retries"], name="max_retries", minimum=0)
            if "max_retries" in options
            else self.max_retries,
            deadline=check_seconds(options["deadline"], name="deadline", optional=True)
            if "deadline" in options
            else self.deadline,
            headers=self.headers
            if extra_headers is None
            else _merged_headers(dict(self.headers), extra_headers),
            extra_body=extra_body,
        )

    def with_user_agent(self, user_agent: str) -> ClientConfig:
        """A copy whose User-Agent names the transport's engine, unless the caller set one."""
        if self.headers.get("User-Agent") != SDK_USER_AGENT:
            return self
        return attrs.evolve(self, headers={**self.headers, "User-Agent": user_agent})


def _merged_headers(headers: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """`extra` over `headers`: a header of `extra`, in any spelling, replaces the same one.

    HTTP header names are case-insensitive: ``accept`` replaces the SDK's ``Accept`` rather
    than going out beside it.
    """
    replaced = {name.lower() for name in extra}
    for name in [name for name in headers if name.lower() in replaced]:
        del headers[name]
    headers.update(extra)
    return headers
