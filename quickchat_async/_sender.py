"""`AsyncSender`: a client's configuration, its connections and lifecycle, and `say()`.

`say()` is the one way a message goes out: it checks the input, encodes the request, and sends
it under the retry policy, each attempt waiting for the rate limiter (if any) and for one of the
client's connection slots, then decodes the reply. `Conversation`, the fan-out and the stores
all send through it; `AsyncQuickchat` adds the factories that build them.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Literal, Unpack

import anyio
import anyio.abc
import attrs
import stamina
from anyio.lowlevel import current_token

from ._config import DEFAULT_MAX_RESPONSE_BYTES, Call, CallOptions, ClientConfig, Timeout
from ._exceptions import APITimeoutError, ClientClosedError, EventLoopError, QuickchatError
from ._loops import Bound, PerLoop
from ._models import HTTPResponse, Reply
from ._observe import resolve_telemetry
from ._ratelimit import Limiter, check_limiter
from ._telemetry import Telemetry, TurnTrace
from ._transports import BaseTransport, Transport, resolve_transport
from ._types import NOT_GIVEN, Flavor, JSONValue, NotGiven, Secret
from ._validation import check_context, check_conv_id, check_metadata, check_text
from ._wire import (
    BACKOFF,
    ChatRequest,
    decode_reply,
    encode_turn,
    retry_delay,
    retry_log_line,
    slot_timeout_error,
    turn_deadline_error,
)


if TYPE_CHECKING:
    from typing import Self

    import httpx
    import httpx2

__all__ = ["AsyncSender"]

logger = logging.getLogger("quickchat_async")

_UNSET: Final = NOT_GIVEN


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class _Pool:
    """A client's connections on one event loop: its transport, and its connection slots.

    The connection slots are where a request waits when `max_connections` are in flight:
    outside the HTTP engine, in call order, within the attempt's deadline.
    """

    __slots__ = ("slots", "transport")

    def __init__(self, transport: Transport, max_connections: int) -> None:
        self.transport = transport
        self.slots = anyio.Semaphore(max_connections, fast_acquire=True)


async def _close_pool(pool: _Pool) -> None:
    await pool.transport.aclose()


class _Connections:
    """A client's connections, a pool per event loop, shared with the clients derived from it.

    The transport built with the client serves the first event loop that sends. Each other
    loop gets a transport of its own from `make`, if the SDK can make one; a transport or
    http_client of the caller's cannot be made again, so it serves its first loop only.
    """

    __slots__ = ("_make", "_unclaimed", "first", "max_connections", "pools")

    def __init__(
        self, first: Transport, make: Callable[[], Transport] | None, max_connections: int
    ) -> None:
        self.first = first
        self._unclaimed: Transport | None = first
        self._make = make
        self.max_connections = max_connections
        self.pools: PerLoop[_Pool] = PerLoop(self._pool, _close_pool)

    @property
    def transport(self) -> Transport:
        """The transport of the event loop that sent last, until it closes; else the first."""
        last = self.pools.last
        return self.first if last is None else last.value.transport

    def _pool(self) -> _Pool:
        transport, self._unclaimed = self._unclaimed, None
        if transport is None:
            if self._make is None:
                raise EventLoopError(
                    "This client sends through a transport or http_client of yours, which "
                    "belongs to the event loop that first sent through it, not to this one. "
                    "Create the client (and its http_client) inside the code this event loop "
                    "runs, or pass transport= a function that makes a new transport: the "
                    "client then makes one for each event loop it runs on."
                )
            transport = self._make()
        return _Pool(transport, self.max_connections)

    async def aclose(self) -> None:
        """Close this loop's pool now (the others close as their loops end)."""
        await self.pools.aclose()
        unclaimed, self._unclaimed = self._unclaimed, None
        if unclaimed is not None:  # never used: no loop to close it on, and none needed
            await unclaimed.aclose()


class AsyncSender(anyio.abc.AsyncResource):
    """The part of `AsyncQuickchat` that holds its settings and connections, and sends.

    It is documented, with its arguments, as `AsyncQuickchat`.
    """

    __slots__ = (
        "_config",
        "_connections",
        "_owns_connections",
        "_rate_limiter",
        "_state",
        "_telemetry",
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
        deadline: float | None = None,
        http_client: httpx2.AsyncClient | httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        transport: Transport
        | Callable[[], Transport]
        | Literal["httpx2", "httpx", "aiohttp"]
        | None = None,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limiter: Limiter | None = None,
        telemetry: Telemetry | NotGiven | None = NOT_GIVEN,
    ) -> None:
        # The credentials are wrapped before anything can fail: a traceback formatted with
        # locals (rich, pytest, Sentry) shows `<redacted>`, never the token or api_key.
        credentials = (Secret(token), Secret(api_key))
        del token, api_key
        config = ClientConfig.build(
            token=credentials[0],
            api_key=credentials[1],
            scenario_id=scenario_id,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_ambiguous=retry_ambiguous,
            deadline=deadline,
            default_headers=default_headers,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
        )
        del credentials
        first, make = resolve_transport(transport, http_client, config.max_connections)
        if isinstance(first, BaseTransport):
            config = config.with_user_agent(first.user_agent)
        self._config = config
        self._connections = _Connections(first, make, config.max_connections)
        self._owns_connections = True
        self._rate_limiter = check_limiter(rate_limiter)
        self._telemetry: Telemetry = resolve_telemetry(telemetry)
        self._state = _State.UNOPENED

    def with_options(
        self,
        *,
        timeout: float | Timeout | NotGiven | None = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        retry_ambiguous: bool | NotGiven = NOT_GIVEN,
        deadline: float | NotGiven | None = NOT_GIVEN,
        default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
        rate_limiter: Limiter | NotGiven | None = NOT_GIVEN,
    ) -> Self:
        """A client with other settings that shares this one's connections.

        Closing it leaves the connections to this client, which still owns them; closing this
        client closes them for both. `default_headers` are merged over this client's.

        Raises:
            ValidationError: a bad value, named.
        """
        derived = object.__new__(type(self))
        derived._config = self._config.with_options(
            timeout=timeout,
            max_retries=max_retries,
            retry_ambiguous=retry_ambiguous,
            deadline=deadline,
            default_headers=default_headers,
        )
        derived._connections = self._connections
        derived._owns_connections = False
        derived._rate_limiter = (
            self._rate_limiter
            if isinstance(rate_limiter, NotGiven)
            else check_limiter(rate_limiter)
        )
        derived._telemetry = self._telemetry
        derived._state = _State.UNOPENED
        return derived

    # --- settings -----------------------------------------------------------------------------

    @property
    def config(self) -> ClientConfig:
        """Everything the requests are built from (the credential never shows)."""
        return self._config

    @property
    def flavor(self) -> Flavor:
        """The API flavor this client speaks."""
        return self._config.flavor

    @property
    def scenario_id(self) -> str:
        """The AI Agent this client talks to."""
        return self._config.scenario_id

    @property
    def base_url(self) -> str:
        """Where the Chat endpoint lives; requests go to `{base_url}/chat`."""
        return self._config.base_url

    @property
    def timeout(self) -> Timeout:
        """The limits of one attempt."""
        return self._config.timeout

    @property
    def max_retries(self) -> int:
        """How many times a request that is safe to resend is retried."""
        return self._config.max_retries

    @property
    def rate_limiter(self) -> Limiter | None:
        """The limiter every attempt waits on, if any."""
        return self._rate_limiter

    @property
    def transport(self) -> Transport:
        """The transport requests go through: that of the event loop that sent last.

        Before the first request, and once that loop's connections are closed, the transport
        made with the client (which the first event loop sends through).
        """
        return self._connections.transport

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether `aclose()` has been called (on this client, or on the one it derives from)."""
        return self._state is _State.CLOSED or self._connections.pools.closed

    async def aclose(self) -> None:
        """Close the connections the client owns. Safe to call twice.

        Those of the running event loop close now. Those of event loops that ended were closed
        as they ended; those of a loop still running in another thread close when it ends.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._owns_connections:
            await self._connections.aclose()

    async def __aenter__(self) -> Self:
        if self.is_closed:
            raise ClientClosedError(
                f"This {type(self).__name__} client is closed; create a new one to open it again."
            )
        self._state = _State.OPENED
        return self

    def __repr__(self) -> str:
        try:
            config = self._config
            state = "closed" if self.is_closed else self._state.value
        except AttributeError:  # shown in the traceback of a failed __init__
            return f"<{type(self).__name__} (not configured)>"
        return (
            f"<{type(self).__name__} flavor={config.flavor.value!r} url={config.url!r} "
            f"scenario_id={config.scenario_id!r} state={state!r}>"
        )

    # --- one round trip -----------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        conv_id: str | None = None,
        client_metadata: Mapping[str, JSONValue] | None = None,
        message_context: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Reply:
        """Send one message and return the reply: a single stateless round trip.

        Args:
            text: the user's message.
            conv_id: continue this conversation; None starts a new one.
            client_metadata: at most 5 keys, sent as is (`kb_topic` filters the Knowledge Base).
            message_context: extra context for the AI, at most 1000 characters.
            **options: per-call `timeout`, `max_retries`, `deadline`, `extra_headers` and
                `extra_body`, for this turn only (see `CallOptions`).

        Raises:
            ValidationError: before sending, on bad input.
            ClientClosedError: the client was closed.
            EventLoopError: the client sends through your transport or http_client, which
                belongs to another event loop.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`); `APITimeoutError`
                when an attempt or the whole turn (`deadline`) ran out of time.
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        check_text(text)
        check_context(message_context, name="message_context")
        check_conv_id(conv_id)
        metadata = check_metadata(client_metadata, name="client_metadata", allow_kb_topic=True)
        call = self._config.call(options)
        request = encode_turn(
            self._config,
            call,
            text=text,
            conv_id=conv_id,
            client_metadata=metadata,
            message_context=message_context,
        )
        return await self.send(request, conv_id=conv_id, call=call)

    async def send(
        self, request: ChatRequest, *, conv_id: str | None = None, call: Call | None = None
    ) -> Reply:
        """Send a prepared request under the retry policy and decode its reply.

        `say()` builds the request from checked input, as conversations do; a request made by
        hand is sent as it is. Give the `conv_id` it continues, if any: the legacy flavor
        leaves it out of continuation replies. `call` holds the turn's retries and deadline
        (by default the client's).

        Raises:
            ClientClosedError: the client was closed.
            EventLoopError: the client sends through your transport or http_client, which
                belongs to another event loop.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`); `APITimeoutError`
                when an attempt or the whole turn ran out of time.
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        if call is None:
            call = self._config.default_call
        # The one event loop check of a turn (0.9 µs): each loop has connections of its own.
        loop = current_token().native_token
        pool = self._connections.pools.last
        if pool is None or pool.loop is not loop:
            pool = await self._enter(loop)
        turn = _Turn(call, pool.value, retry_ambiguous=self._config.retry_ambiguous)
        with self._telemetry.turn(self._config, request, conv_id) as trace:
            if call.deadline is None:
                reply = await self._with_retries(request, conv_id, turn, trace)
            else:
                with anyio.move_on_after(call.deadline):
                    reply = await self._with_retries(request, conv_id, turn, trace)
                    trace.replied(reply)
                    return reply
                raise turn_deadline_error(
                    url=request.url, deadline=call.deadline, sent=turn.may_have_landed()
                )
            trace.replied(reply)
            return reply

    async def _enter(self, loop: object) -> Bound[_Pool]:
        """The connections of an event loop this client has not sent from last."""
        if self.is_closed:
            raise ClientClosedError(
                f"This {type(self).__name__} client is closed; create a new one to keep talking."
            )
        return await self._connections.pools.enter(loop)

    async def _with_retries(
        self, request: ChatRequest, conv_id: str | None, turn: _Turn, trace: TurnTrace
    ) -> Reply:
        """The attempts of one turn, under the retry policy."""
        max_retries = turn.call.max_retries
        # The first attempt runs outside stamina: nearly every turn succeeds at once, and a
        # retry context costs 24 µs per turn on this machine (tenacity's AsyncRetrying), a
        # fifth of what raw aiohttp spends on a whole request at 64 in flight.
        try:
            return await self._attempt(request, conv_id, 1, turn, trace)
        except QuickchatError as exc:
            if not max_retries or turn.retry_delay(exc) is False:
                raise
            last = exc
        async for attempt in stamina.retry_context(
            on=turn.retry_delay, attempts=max_retries + 1, timeout=None, **BACKOFF
        ):
            with attempt:
                if attempt.num == 1:  # hand stamina the first failure: it schedules the wait
                    raise last
                logger.info(retry_log_line(request.url, attempt.num, max_retries + 1, last))
                try:
                    return await self._attempt(request, conv_id, attempt.num, turn, trace)
                except QuickchatError as exc:
                    last = exc
                    raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _attempt(
        self, request: ChatRequest, conv_id: str | None, num: int, turn: _Turn, trace: TurnTrace
    ) -> Reply:
        """One attempt: wait for the rate and a connection slot, send, decode."""
        if self.is_closed:  # also between attempts: closed while a retry waited
            raise self._closed_error()
        trace.attempt(num)
        if self._rate_limiter is not None:
            await self._rate_limiter.acquire()
        request = turn.within_deadline(request)
        try:
            response = await self._send(request, turn)
            return decode_reply(
                response,
                config=self._config,
                conv_id=conv_id,
                attempts=num,
                elapsed=time.monotonic() - turn.started,
            )
        except QuickchatError as exc:
            trace.attempt_failed(num, exc)
            turn.failed(exc)
            if isinstance(exc, APITimeoutError) and turn.out_of_time():
                raise turn_deadline_error(
                    url=request.url, deadline=turn.call.deadline, sent=turn.may_have_landed()
                ) from exc
            raise

    def _closed_error(self) -> ClientClosedError:
        return ClientClosedError(
            f"This {type(self).__name__} client is closed; create a new one to keep talking."
        )

    async def _send(self, request: ChatRequest, turn: _Turn) -> HTTPResponse:
        """Hold a connection slot for the attempt; a full pool waits within the deadline."""
        pool = turn.pool
        slots = pool.slots
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            request = await self._wait_for_slot(request, slots)
        if self.is_closed:  # closed while the attempt waited (the rate, a slot)
            slots.release()
            raise self._closed_error()
        # Cleared when the transport answers, or fails and says whether it sent; left set when
        # the turn's deadline cancels it mid-way, since the message may then have gone out.
        turn.sending = True
        try:
            response = await pool.transport.send(request)
        except QuickchatError:
            turn.sending = False
            raise
        finally:
            slots.release()
        turn.sending = False
        return response

    async def _wait_for_slot(self, request: ChatRequest, slots: anyio.Semaphore) -> ChatRequest:
        """Queue for a slot; the wait counts against the attempt's deadline."""
        total = request.timeout.total
        start = anyio.current_time()
        with anyio.move_on_after(total) as waiting:
            await slots.acquire()
        remaining = None if total is None else total - (anyio.current_time() - start)
        if waiting.cancelled_caught or (remaining is not None and remaining <= 0):
            if not waiting.cancelled_caught:
                # The slot came just as the deadline ran out. An attempt with no time left
                # could only fail, perhaps after the message reached the server: unsent is
                # better.
                slots.release()
            raise slot_timeout_error(
                url=request.url, total=total, slots=self._config.max_connections
            )
        if remaining is None:
            return request
        return attrs.evolve(request, timeout=attrs.evolve(request.timeout, total=remaining))


class _Turn:
    """What one turn has been through: its settings, when it started, what may have landed."""

    __slots__ = (
        "call",
        "deadline_at",
        "landed",
        "pool",
        "retry_ambiguous",
        "sending",
        "started",
    )

    def __init__(self, call: Call, pool: _Pool, *, retry_ambiguous: bool) -> None:
        self.call = call
        #: The connections of the event loop the turn runs on.
        self.pool = pool
        #: For `Reply.elapsed`: a wall clock. The deadline is kept on the event loop's clock
        #: (anyio's, which costs 3 µs a reading: only turns with a deadline read it).
        self.started = time.monotonic()
        self.deadline_at = None if call.deadline is None else anyio.current_time() + call.deadline
        self.retry_ambiguous = retry_ambiguous
        #: An earlier attempt failed after the message may have reached the server.
        self.landed = False
        #: An attempt is in the transport right now.
        self.sending = False

    def may_have_landed(self) -> bool:
        """Whether the server may have recorded the message, if the turn ends now."""
        return self.landed or self.sending

    def failed(self, exc: QuickchatError) -> None:
        self.landed = self.landed or exc.outcome_unknown

    def out_of_time(self) -> bool:
        return self.deadline_at is not None and anyio.current_time() >= self.deadline_at

    def within_deadline(self, request: ChatRequest) -> ChatRequest:
        """The request, its attempt cut short to end by the turn's deadline."""
        if self.deadline_at is None:
            return request
        remaining = max(self.deadline_at - anyio.current_time(), 0.001)
        total = request.timeout.total
        if total is not None and total <= remaining:
            return request
        return attrs.evolve(request, timeout=attrs.evolve(request.timeout, total=remaining))

    def retry_delay(self, exc: Exception) -> bool | float:
        """The retry policy, for stamina; a wait that would outlast the deadline is refused."""
        delay = retry_delay(exc, retry_ambiguous=self.retry_ambiguous)
        if self.deadline_at is None or delay is False or delay is True:
            return delay
        return delay if anyio.current_time() + delay < self.deadline_at else False
