"""A client's configuration: the limits of one attempt, and everything a request is built from.

`ClientConfig.build()` turns the client's constructor arguments (and the `QUICKCHAT_*`
environment variables they fall back to) into one frozen value that the wire core, the sender
and every transport read. The credential goes into the request headers (current flavor) or the
start of every body (legacy flavor) here, once; neither ever shows in a repr.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Final

import attrs

from ._types import NOT_GIVEN, Flavor, Secret
from ._validation import (
    check_base_url,
    check_count,
    check_credential,
    check_headers,
    check_scenario_id,
    check_seconds,
)
from ._version import __version__


__all__ = [
    "CURRENT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "LEGACY_BASE_URL",
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
        default_headers: object,
        max_connections: object,
        max_response_bytes: object,
    ) -> ClientConfig:
        """Check the client's arguments, falling back to `QUICKCHAT_*` variables when unset.

        Raises:
            ValidationError: no credential, both, no scenario_id, or a bad argument.
        """
        where = "both token= and api_key= were given"
        if token.reveal() is None and api_key.reveal() is None:
            token = Secret(_env("QUICKCHAT_API_TOKEN"))
            api_key = Secret(_env("QUICKCHAT_API_KEY"))
            where = "QUICKCHAT_API_TOKEN and QUICKCHAT_API_KEY are both set"
        flavor, secret = check_credential(token, api_key, where=where)
        del token, api_key
        scenario = check_scenario_id(
            _env("QUICKCHAT_SCENARIO_ID") if scenario_id is None else scenario_id
        )
        if base_url is None:
            base_url = _env("QUICKCHAT_BASE_URL")
        if base_url is None:
            base_url = CURRENT_BASE_URL if flavor is Flavor.CURRENT else LEGACY_BASE_URL
        base = check_base_url(base_url)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain",
            "User-Agent": SDK_USER_AGENT,
        }
        extra = check_headers(default_headers)
        if any(name.lower() == "user-agent" for name in extra):  # theirs, in any spelling
            del headers["User-Agent"]
        headers.update(extra)
        return cls._with_credential(
            secret,
            flavor=flavor,
            scenario_id=scenario,
            base_url=base,
            url=f"{base}/chat",
            timeout=DEFAULT_TIMEOUT if timeout is NOT_GIVEN else Timeout.of(timeout),
            max_retries=check_count(max_retries, name="max_retries", minimum=0),
            retry_ambiguous=bool(retry_ambiguous),
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
    ) -> ClientConfig:
        """A copy with other per-request settings; the credential and the endpoint stay.

        Raises:
            ValidationError: a bad value.
        """
        return attrs.evolve(
            self,
            timeout=self.timeout if timeout is NOT_GIVEN else Timeout.of(timeout),
            max_retries=self.max_retries
            if max_retries is NOT_GIVEN
            else check_count(max_retries, name="max_retries", minimum=0),
            retry_ambiguous=self.retry_ambiguous
            if retry_ambiguous is NOT_GIVEN
            else bool(retry_ambiguous),
        )

    def with_user_agent(self, user_agent: str) -> ClientConfig:
        """A copy whose User-Agent names the transport's engine, unless the caller set one."""
        if self.headers.get("User-Agent") != SDK_USER_AGENT:
            return self
        return attrs.evolve(self, headers={**self.headers, "User-Agent": user_agent})
