"""`AsyncQuickchat`: configuration, the two API flavors, building requests, and the retry policy."""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, cast

import anyio
import attrs
import httpx
import stamina

from ._aiohttp import AiohttpTransport
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    InternalServerError,
    QuickchatError,
    RateLimitError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    ValidationError,
    error_from_response,
    unexpected_response,
)
from ._fanout import FanOut, FanOutResult, Job
from ._models import JSONValue, Reply
from ._ratelimit import CURRENT_LIMITER, RateLimiter
from ._slots import Slots
from ._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
    ChatRequest,
    HTTPResponse,
    HttpxTransport,
    Timeout,
    Transport,
)
from ._validation import (
    check_context,
    check_conv_id,
    check_count,
    check_metadata,
    check_text,
)


if TYPE_CHECKING:
    from typing_extensions import Self

    from ._conversation import Conversation
    from ._stores import ConversationStore, StoredConversation

__all__ = ["NOT_GIVEN", "AsyncQuickchat", "Flavor", "NotGiven"]

logger = logging.getLogger("quickchat_async")

CURRENT_BASE_URL: Final = "https://app.quickchat.ai"
LEGACY_BASE_URL: Final = "https://chat.quickchat.ai"
#: The longest `Retry-After` the SDK sleeps through; longer, it raises at once.
MAX_RETRY_AFTER: Final = 60.0
#: Exponential backoff between retries: 0.5 s, then 1 s, ... up to 8 s, plus up to 1 s of jitter.
_BACKOFF: Final = {"wait_initial": 0.5, "wait_max": 8.0, "wait_jitter": 1.0}
_UNSENT: Final = "The message was not sent."
#: Error pages must fit, so the body limit cannot be set lower than this.
_MIN_RESPONSE_BYTES: Final = 1024


class NotGiven(enum.Enum):
    """The type of `NOT_GIVEN`: "use the default", where None means "no limit"."""

    NOT_GIVEN = enum.auto()

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN
DEFAULT_TIMEOUT: Final = Timeout(total=30.0, connect=5.0)


class Flavor(str, enum.Enum):
    """Which of the Chat endpoint's two documented flavors a client speaks."""

    #: Bearer token auth, at https://app.quickchat.ai/chat.
    CURRENT = "current"
    #: The api_key in the JSON body, at https://chat.quickchat.ai/chat.
    LEGACY = "legacy"


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
#: A JSON string literal (what `_ENCODER` makes of a str), without the encoder's dispatch.
_string: Final[Callable[[str], str]] = json.encoder.encode_basestring
#: json's C scanner of one value (an instance attribute of the decoder, untyped in typeshed).
_scan_once: Final = cast(
    "Callable[[str, int], tuple[object, int]]", vars(json.JSONDecoder())["scan_once"]
)


def _loads(content: bytes) -> object:
    """`json.loads(content)`, without its encoding sniffing and regexes for a UTF-8 object.

    Raises:
        ValueError: not JSON (`json.JSONDecodeError`, or `UnicodeDecodeError`).
    """
    if content[:1] != b"{" or content[1:2] == b"\x00":  # not an object, or UTF-16/32
        return json.loads(content)
    text = content.decode()
    try:
        data, end = _scan_once(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError("extra data after the JSON value")
    return data


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


class _Secret:
    """A credential whose repr never shows it, so tracebacks formatted with locals stay clean."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def reveal(self) -> object:
        return self._value

    def __repr__(self) -> str:
        return "None" if self._value is None else "<redacted>"


def _resolve_credential(token: _Secret, api_key: _Secret) -> tuple[Flavor, str, _Secret]:
    """Pick the flavor from explicit arguments first, then from the environment.

    The raw value is only ever read inline, never bound to a local, so no frame of a failed
    validation holds it.
    """
    if token.reveal() is None and api_key.reveal() is None:
        token = _Secret(_env("QUICKCHAT_API_TOKEN"))
        api_key = _Secret(_env("QUICKCHAT_API_KEY"))
        where = "QUICKCHAT_API_TOKEN and QUICKCHAT_API_KEY are both set"
    else:
        where = "both token= and api_key= were given"
    if token.reveal() is not None and api_key.reveal() is not None:
        raise ValidationError(
            f"{where}: pass a token (current flavor, Bearer) or an api_key (legacy flavor), "
            "not both."
        )
    if token.reveal() is None and api_key.reveal() is None:
        raise ValidationError(
            "No credential: pass token=... (or set QUICKCHAT_API_TOKEN) for the current flavor, "
            "or api_key=... (or set QUICKCHAT_API_KEY) for the legacy one."
        )
    flavor, secret, name = (
        (Flavor.CURRENT, token, "token")
        if token.reveal() is not None
        else (Flavor.LEGACY, api_key, "api_key")
    )
    if not isinstance(secret.reveal(), str) or not str(secret.reveal()).strip():
        raise ValidationError(f"{name} must be a non-empty string.")
    if any(c in str(secret.reveal()) for c in "\r\n\x00"):
        raise ValidationError(f"{name} contains a line break or NUL; check how it was read.")
    return flavor, name, secret


def _resolve_scenario_id(scenario_id: object) -> str:
    if scenario_id is None:
        scenario_id = _env("QUICKCHAT_SCENARIO_ID")
    if not isinstance(scenario_id, str) or not scenario_id.strip():
        raise ValidationError(
            "scenario_id is required: pass scenario_id=... or set QUICKCHAT_SCENARIO_ID "
            "(it is the ID of your AI Agent)."
        )
    return scenario_id


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolve_base_url(base_url: object, flavor: Flavor) -> str:
    """Check the base URL and return it without a trailing slash (or `/chat`)."""
    if base_url is None:
        base_url = _env("QUICKCHAT_BASE_URL")
    if base_url is None:
        return CURRENT_BASE_URL if flavor is Flavor.CURRENT else LEGACY_BASE_URL
    if not isinstance(base_url, str):
        raise ValidationError(f"base_url must be a string, not {type(base_url).__name__}.")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ValidationError("base_url is not a valid URL.") from None
    if url.userinfo:
        raise ValidationError(
            "base_url must not embed credentials (user:password@host): pass token= or api_key=."
        )
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValidationError(
            f"base_url must be an http(s) URL with a host, such as {CURRENT_BASE_URL}."
        )
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ValidationError(
            f"base_url uses plain http:// to {url.host}, which would send the credential in "
            "clear text; use https://, or http:// only to a loopback host (127.0.0.1, localhost)."
        )
    if url.query or url.fragment:
        raise ValidationError("base_url must not have a query string or fragment.")
    path = url.path.rstrip("/")
    path = path.removesuffix("/chat")
    return str(url.copy_with(path=path or "/")).rstrip("/")


def _resolve_headers(default_headers: object) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/plain"}
    headers["User-Agent"] = USER_AGENT
    if default_headers is None:
        return headers
    if not isinstance(default_headers, Mapping):
        raise ValidationError("default_headers must be a mapping of header names to values.")
    for name, value in default_headers.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationError("default_headers must map header names to string values.")
        if name.lower() in {"authorization", "proxy-authorization", "content-length", "host"}:
            raise ValidationError(
                f"default_headers may not set {name}: the SDK sets it (pass token= for auth)."
            )
        if name.lower() == "user-agent":  # the caller's, in whatever spelling, replaces ours
            headers.pop("User-Agent", None)
        headers[name] = value
    return headers


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class AsyncQuickchat:
    """An async client for Quickchat AI's Chat endpoint, in either of its two flavors.

    Give it a `token` for the current flavor (Bearer auth, `https://app.quickchat.ai/chat`) or
    an `api_key` for the legacy one (`api_key` in the body, `https://chat.quickchat.ai/chat`).
    Unset arguments fall back to `QUICKCHAT_API_TOKEN`, `QUICKCHAT_API_KEY`,
    `QUICKCHAT_SCENARIO_ID` and `QUICKCHAT_BASE_URL`.

    Use it as an async context manager, or call `aclose()` when done.

    Args:
        token: the API token (current flavor).
        api_key: the API key (legacy flavor).
        scenario_id: the AI Agent's ID.
        base_url: where the Chat endpoint lives; requests go to `{base_url}/chat`. Plain
            `http://` is refused except to a loopback host.
        timeout: seconds one attempt may take in all (default 30, connecting 5), a `Timeout`, or
            None for no limit at all.
        max_retries: how many times a failed request that is safe to resend is retried.
        retry_ambiguous: also retry failures after which the server may have recorded the
            message (read timeouts, dropped connections, 5xx). This can duplicate a message.
        http_client: a caller-owned `httpx.AsyncClient` (proxies, mTLS, HTTP/2, mocks). The SDK
            never closes it.
        default_headers: extra headers for every request.
        transport: ``"httpx"`` (the default; asyncio and trio), ``"aiohttp"`` (asyncio only,
            several times faster for fan-out; extra ``[aiohttp]``), or a `Transport` instance.
        max_connections: how many requests may be in flight at once; further ones wait.
        max_response_bytes: the largest response body the SDK reads.

    Raises:
        ValidationError: no credential, both, no scenario_id, or a bad argument.
        ImportError: ``transport="aiohttp"`` without aiohttp installed.
        RuntimeError: ``transport="aiohttp"`` inside a trio event loop.
    """

    __slots__ = (
        "_body_prefix",
        "_flavor",
        "_headers",
        "_limiter",
        "_max_response_bytes",
        "_max_retries",
        "_retry_ambiguous",
        "_scenario_id",
        "_secrets",
        "_state",
        "_timeout",
        "_transport",
        "_url",
        "base_url",
    )

    def __init__(
        self,
        *,
        token: str | None = None,
        api_key: str | None = None,
        scenario_id: str | None = None,
        base_url: str | None = None,
        timeout: float | Timeout | NotGiven | None = NOT_GIVEN,
        max_retries: int = 2,
        retry_ambiguous: bool = False,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        transport: Transport | Literal["httpx", "aiohttp"] | None = None,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        # The credentials are wrapped before anything can fail: a traceback formatted with
        # locals (rich, pytest, Sentry) shows `<redacted>`, never the token or api_key.
        credentials = (_Secret(token), _Secret(api_key))
        del token, api_key
        flavor, _, secret = _resolve_credential(*credentials)
        del credentials
        self._flavor = flavor
        self._scenario_id = _resolve_scenario_id(scenario_id)
        self.base_url: str = _resolve_base_url(base_url, flavor)
        self._url = f"{self.base_url}/chat"

        self._timeout = DEFAULT_TIMEOUT if timeout is NOT_GIVEN else _timeout_of(timeout)
        self._max_retries = check_count(max_retries, name="max_retries", minimum=0)
        self._retry_ambiguous = bool(retry_ambiguous)
        check_count(max_connections, name="max_connections", minimum=1)
        check_count(max_response_bytes, name="max_response_bytes", minimum=_MIN_RESPONSE_BYTES)
        self._max_response_bytes = max_response_bytes
        self._headers = _resolve_headers(default_headers)
        self._install(secret)

        self._transport = resolve_transport(transport, http_client, max_connections)
        user_agent = getattr(self._transport, "user_agent", None)  # the aiohttp one names aiohttp
        if isinstance(user_agent, str) and self._headers.get("User-Agent") == USER_AGENT:
            self._headers["User-Agent"] = user_agent
        # Waiting for a free connection happens here, outside the HTTP engine, in call order.
        self._limiter = Slots(max_connections)
        self._state = _State.UNOPENED

    def _install(self, secret: _Secret) -> None:
        """Put the credential where requests need it; nothing after this can fail."""
        value = str(secret.reveal())
        self._secrets = (value,)
        # Every body starts the same way; the api_key of the legacy flavor goes first.
        self._body_prefix = '{"scenario_id":' + _string(self._scenario_id)
        if self._flavor is Flavor.CURRENT:
            self._headers["Authorization"] = f"Bearer {value}"
        else:
            self._body_prefix = '{"api_key":' + _string(value) + "," + self._body_prefix[1:]

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def flavor(self) -> Flavor:
        """The API flavor this client speaks."""
        return self._flavor

    @property
    def scenario_id(self) -> str:
        """The AI Agent this client talks to."""
        return self._scenario_id

    @property
    def timeout(self) -> Timeout:
        """The limits of one attempt."""
        return self._timeout

    @property
    def max_retries(self) -> int:
        """How many times a request that is safe to resend is retried."""
        return self._max_retries

    @property
    def is_closed(self) -> bool:
        """Whether `aclose()` has been called."""
        return self._state is _State.CLOSED

    @property
    def transport(self) -> Transport:
        """The transport requests go through."""
        return self._transport

    async def aclose(self) -> None:
        """Close the connections the client owns. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        if self._state is _State.CLOSED:
            raise ClientClosedError(
                "This AsyncQuickchat client is closed; create a new one to open it again."
            )
        self._state = _State.OPENED
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        try:
            return (
                f"<AsyncQuickchat flavor={self._flavor.value!r} url={self._url!r} "
                f"scenario_id={self._scenario_id!r} state={self._state.value!r}>"
            )
        except AttributeError:  # shown in the traceback of a failed __init__
            return "<AsyncQuickchat (not configured)>"

    # --- conversations ------------------------------------------------------------------------

    def conversation(
        self,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> Conversation:
        """Start a conversation, or continue one whose `conv_id` you stored.

        Args:
            conv_id: an existing conversation to continue; None starts a new one on the first
                `say()`.
            kb_topic: the Knowledge Base topic to filter on; sent on every request.
            metadata: `client_metadata` sent with every message (with kb_topic, at most 5 keys).
            max_history: keep only the last N turns in `history` (None keeps all).

        Raises:
            ValidationError: on bad arguments.
        """
        from ._conversation import Conversation  # noqa: PLC0415 -- the two modules refer to each other

        return Conversation(
            self, conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )

    def resume(self, snapshot: Mapping[str, object]) -> Conversation:
        """Rebuild a conversation from `Conversation.snapshot()`, continuing the same conv_id.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        from ._conversation import Conversation  # noqa: PLC0415

        return Conversation.from_snapshot(self, snapshot)

    async def conversation_for(
        self,
        user_key: str,
        *,
        store: ConversationStore,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | NotGiven | None = NOT_GIVEN,
        lock_ttl: float | None = None,
        lock_timeout: float | None = None,
    ) -> StoredConversation:
        """Load a user's stored conversation, or start one; each turn is saved before it returns.

        Turns of one user key run one at a time, across tasks and, with a shared store, across
        processes and machines: two first messages from one user start one conversation.

        Args:
            user_key: whose conversation it is, in the app's terms (a chat ID, "telegram:42").
            store: where conversations live: `SQLiteStore` for one bot process, `RedisStore`
                for several workers, `MemoryStore` for tests.
            kb_topic: the Knowledge Base topic. It starts the user's conversation with it; for a
                stored one it replaces the topic from the next turn on.
            metadata: `client_metadata` for every message. It starts the user's conversation
                with it; for a stored one it replaces the stored metadata from the next turn on.
            max_history: how many turns the store keeps (default 100; None keeps all, 0 keeps
                only the conv_id).
            lock_ttl: seconds a turn's lock lives without renewal; by default, longer than this
                client's slowest turn (113 s with the default timeout and retries).
            lock_timeout: seconds a turn waits for the user's lock (default: twice lock_ttl).

        Raises:
            ValidationError: on bad arguments, or a kb_topic for a stored conversation that
                started without one.
            StoreError: the store failed, or the user's record is unreadable.
        """
        from ._stores import StoredConversation  # noqa: PLC0415 -- stores refer to the client

        return await StoredConversation.open(
            self,
            user_key,
            store=store,
            kb_topic=kb_topic,
            metadata=metadata,
            max_history=max_history,
            lock_ttl=lock_ttl,
            lock_timeout=lock_timeout,
        )

    # --- fan-out ------------------------------------------------------------------------------

    async def fan_out(
        self,
        jobs: Iterable[Job],
        *,
        concurrency: int = 64,
        rate_per_second: float | None = None,
        rate_per_minute: float | None = None,
        rate_limiter: RateLimiter | None = None,
        on_result: Callable[[FanOutResult], object] | None = None,
    ) -> list[FanOutResult]:
        """Run many conversations at once; return every job's result, in input order.

        Each job runs in a new conversation: a `Script` (or a list of texts) is said turn by
        turn; an ``async def job(conv)`` is awaited with the conversation. A job that fails
        gets its error in its result and never cancels the others.

        Args:
            jobs: the jobs; any iterable (a generator too: jobs are taken as workers free up).
            concurrency: how many jobs run at once. Requests in flight are also bounded by
                `max_connections`.
            rate_per_second: at most this many requests a second, retries included.
            rate_per_minute: at most this many requests a minute, retries included.
            rate_limiter: a `RateLimiter` to share between fan-outs, instead of the rates.
            on_result: called with each result as it arrives (a plain or an async function).

        Raises:
            ValidationError: a bad concurrency or rate.
        """
        results: list[FanOutResult] = []
        async with self.fan_out_stream(
            jobs,
            concurrency=concurrency,
            rate_per_second=rate_per_second,
            rate_per_minute=rate_per_minute,
            rate_limiter=rate_limiter,
            on_result=on_result,
        ) as stream:
            results.extend([result async for result in stream])
        results.sort(key=lambda result: result.index)
        return results

    def fan_out_stream(
        self,
        jobs: Iterable[Job],
        *,
        concurrency: int = 64,
        rate_per_second: float | None = None,
        rate_per_minute: float | None = None,
        rate_limiter: RateLimiter | None = None,
        on_result: Callable[[FanOutResult], object] | None = None,
    ) -> FanOut:
        """Run many conversations at once, yielding results as they finish.

        Takes the same arguments as `fan_out`. Use it as::

            async with client.fan_out_stream(jobs, concurrency=32) as results:
                async for result in results:
                    print(result.index, result.ok)

        Leaving the block before the end cancels the jobs still running.

        Raises:
            ValidationError: a bad concurrency or rate.
        """
        return FanOut(
            self,
            jobs,
            concurrency=concurrency,
            rate_per_second=rate_per_second,
            rate_per_minute=rate_per_minute,
            rate_limiter=rate_limiter,
            on_result=on_result,
        )

    # --- one round trip -----------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        conv_id: str | None = None,
        client_metadata: Mapping[str, JSONValue] | None = None,
        message_context: str | None = None,
    ) -> Reply:
        """Send one message and return the reply: a single stateless round trip.

        Args:
            text: the user's message.
            conv_id: continue this conversation; None starts a new one.
            client_metadata: at most 5 keys, sent as is (`kb_topic` filters the Knowledge Base).
            message_context: extra context for the AI, at most 1000 characters.

        Raises:
            ValidationError: before sending, on bad input.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`).
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        check_text(text)
        check_context(message_context, name="message_context")
        check_conv_id(conv_id)
        metadata = check_metadata(client_metadata, name="client_metadata", allow_kb_topic=True)
        request = self._request(text, conv_id, metadata, message_context)
        return await self._exchange(request, conv_id)

    # --- internals shared with Conversation ---------------------------------------------------

    def _request(
        self,
        text: str,
        conv_id: str | None,
        client_metadata: Mapping[str, JSONValue],
        message_context: str | None,
    ) -> ChatRequest:
        """Encode the body in the documented field order, as `_ENCODER` would, piece by piece."""
        body = self._body_prefix
        if conv_id is not None:
            body += ',"conv_id":' + _string(conv_id)
        body += ',"text":' + _string(text)
        if message_context is not None:
            body += ',"message_context":' + _string(message_context)
        if client_metadata:
            try:
                body += ',"client_metadata":' + _ENCODER.encode(client_metadata)
            except (TypeError, ValueError) as exc:  # values changed after they were checked
                raise ValidationError(f"client_metadata values must be JSON: {exc}.") from None
        try:
            encoded = (body + "}").encode()
        except UnicodeEncodeError:
            raise ValidationError(
                "The message holds a lone surrogate (a half of a UTF-16 pair, such as '\\ud800') "
                "and cannot be sent as UTF-8; check how the text was decoded."
            ) from None
        return ChatRequest(
            self._url, self._headers, encoded, self._timeout, self._max_response_bytes
        )

    async def _exchange(self, request: ChatRequest, conv_id: str | None) -> Reply:
        """Send with the retry policy and decode the reply."""
        if self._state is _State.CLOSED:
            raise ClientClosedError(
                "This AsyncQuickchat client is closed; create a new one to keep talking."
            )
        try:
            # The first attempt runs outside stamina: nearly every turn succeeds at once, and
            # entering a retry context costs more than the rest of the SDK's own work.
            return self._reply(await self._send(request), conv_id, 1)
        except QuickchatError as exc:
            if not self._max_retries or self._retry_delay(exc) is False:
                raise
            last = exc
        async for attempt in stamina.retry_context(
            on=self._retry_delay, attempts=self._max_retries + 1, timeout=None, **_BACKOFF
        ):
            with attempt:
                if attempt.num == 1:  # hand stamina the first failure, so it schedules the wait
                    raise last
                logger.info(
                    "Retrying the Chat request to %s (attempt %d of %d) after %s",
                    self._url,
                    attempt.num,
                    self._max_retries + 1,
                    type(last).__name__,
                )
                try:
                    return self._reply(await self._send(request), conv_id, attempt.num)
                except QuickchatError as exc:
                    last = exc
                    raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _retry_delay(self, exc: Exception) -> bool | float:
        """The retry policy, for stamina: False (do not retry), True (back off), or seconds."""
        if isinstance(exc, (RateLimitError, ServiceUnavailableError)):
            if exc.retry_after is None:
                return True
            return exc.retry_after if exc.retry_after <= MAX_RETRY_AFTER else False
        if not isinstance(exc, (APIConnectionError, InternalServerError, UnexpectedResponseError)):
            return False
        if exc.outcome_unknown:
            return self._retry_ambiguous
        return True

    def _reply(self, response: HTTPResponse, conv_id: str | None, num: int) -> Reply:
        """The reply of attempt `num`, or the error its response means."""
        status = response.status_code
        if not 200 <= status < 300:  # noqa: PLR2004
            raise error_from_response(response, url=self._url, secrets=self._secrets, attempts=num)
        if response.truncated:
            err = unexpected_response(
                f"the body is larger than max_response_bytes={self._max_response_bytes}",
                status_code=status,
                body=response.content,
                secrets=self._secrets,
            )
            raise ResponseTooLargeError(err.message, status_code=status, body=err.body)
        return self._decode(response, conv_id)

    async def _send(self, request: ChatRequest) -> HTTPResponse:
        """Hold a connection slot for the attempt; a full pool waits within the deadline.

        Inside a fan-out with a rate limit, every attempt (retries too) first waits its turn.
        """
        rate = CURRENT_LIMITER.get()
        if rate is not None:
            await rate.acquire()
        limiter = self._limiter
        if not limiter.take_nowait():
            total = request.timeout.total
            start = anyio.current_time()
            with anyio.move_on_after(total) as waiting:
                await limiter.take()
            remaining = None if total is None else total - (anyio.current_time() - start)
            if waiting.cancelled_caught or (remaining is not None and remaining <= 0):
                if not waiting.cancelled_caught:
                    # The slot came just as the deadline ran out. An attempt with no time left
                    # could only fail, perhaps after the message reached the server: unsent is
                    # better.
                    limiter.give()
                raise APITimeoutError(
                    f"The SDK timed out after {total:g} s waiting for one of its "
                    f"{limiter.total:g} connection slots to {self._url}. {_UNSENT} Raise "
                    "max_connections or the timeout, or send less at once.",
                    url=self._url,
                ) from None
            if remaining is not None:  # the wait counts against the attempt's deadline
                request = attrs.evolve(
                    request, timeout=attrs.evolve(request.timeout, total=remaining)
                )
        try:
            return await self._transport.send(request)
        finally:
            limiter.give()

    def _decode(self, response: HTTPResponse, conv_id: str | None) -> Reply:
        """Read the documented JSON: `reply`, `conv_id`, `ord_number`, `src`.

        The legacy flavor leaves `conv_id` out on continuations: the request's one stands.

        Raises:
            UnexpectedResponseError: the body is not the documented JSON. It is raised here,
                from a frame that holds no part of the body: a server may echo a credential,
                and a traceback formatted with locals would print it.
        """
        reply = _parse_reply(response.content, conv_id)
        if isinstance(reply, str):
            raise unexpected_response(
                reply,
                status_code=response.status_code,
                body=response.content,
                secrets=self._secrets,
            )
        return reply


def _parse_reply(content: bytes, conv_id: str | None) -> Reply | str:
    """The reply in a 2xx body, or why there is none."""
    try:
        data = _loads(content)
    except ValueError:
        return "its body is not JSON"
    if not isinstance(data, dict):
        return "its body is not a JSON object"
    data = cast("dict[str, JSONValue]", data)
    reply = data.get("reply")
    if not isinstance(reply, str):
        return "its body has no 'reply' text"
    got_conv_id = data.get("conv_id")
    if got_conv_id is None:
        got_conv_id = conv_id
    if not isinstance(got_conv_id, str) or not got_conv_id:
        return "its body has no conv_id for the new conversation"
    ord_number = data.get("ord_number")
    src = data.get("src")
    return Reply(
        conv_id=got_conv_id,
        html=reply,
        ord_number=ord_number if type(ord_number) is int else None,
        src=src if type(src) is int else None,
        raw=data,
    )


def _timeout_of(value: object) -> Timeout:
    try:
        return Timeout.of(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(str(exc)) from None


def resolve_transport(transport: object, http_client: object, max_connections: int) -> Transport:
    """Pick the transport. The client closes it; a caller's httpx client stays open."""
    if http_client is not None:
        if transport is not None:
            raise ValidationError("Pass http_client= or transport=, not both.")
        if not isinstance(http_client, httpx.AsyncClient):
            raise ValidationError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}."
            )
        return HttpxTransport(http_client)
    if transport is None or transport == "httpx":
        return HttpxTransport(max_connections=max_connections)
    if transport == "aiohttp":
        return AiohttpTransport(max_connections=max_connections)
    if isinstance(transport, str):
        raise ValidationError(
            f"Unknown transport {transport!r}; use 'httpx', 'aiohttp' or a Transport."
        )
    if not isinstance(transport, Transport):
        raise ValidationError("transport must have async send(request) and aclose() methods.")
    return transport
