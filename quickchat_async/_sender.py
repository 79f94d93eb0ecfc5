"""`AsyncSender`: a client's configuration, its connections and lifecycle, and `say()`.

`say()` is the one way a message goes out: it checks the input, encodes the request, and sends
it under the retry policy, each attempt waiting for the rate limiter (if any) and for one of the
client's connection slots, then decodes the reply. `Conversation`, the fan-out and the stores
all send through it; `AsyncQuickchat` adds the factories that build them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Unpack

import anyio
import anyio.abc

from ._attempts import Attempts, after_slot_wait
from ._config import DEFAULT_MAX_RESPONSE_BYTES, Call, CallOptions, ClientConfig, Timeout
from ._exceptions import EventLoopError, QuickchatError
from ._loops import Bound, PerLoop, current_loop
from ._models import Reply
from ._ratelimit import Limiter, check_limiter
from ._sender_base import SenderBase
from ._telemetry import Telemetry, TurnTrace
from ._transports import BaseTransport, Transport, resolve_transport
from ._types import NOT_GIVEN, JSONValue, NotGiven, Secret
from ._wire import ChatRequest, decode_reply, encode_say


if TYPE_CHECKING:
    from typing import Self

    import httpx
    import httpx2

__all__ = ["AsyncSender"]


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

    @property
    def closed(self) -> bool:
        """Whether the client that owns them closed them."""
        return self.pools.closed

    def mark_closed(self) -> None:
        """Refuse further use: the owner is closing them (`aclose()` closes them)."""
        self.pools.closed = True

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


class AsyncSender(SenderBase[Transport, _Connections], anyio.abc.AsyncResource):
    """The part of `AsyncQuickchat` that holds its settings and connections, and sends.

    Its base class, and what a `Conversation`'s `client` is typed as (at run time, the
    `AsyncQuickchat` that made it). It is documented, with its arguments, as `AsyncQuickchat`.
    """

    __slots__ = ("_rate_limiter",)

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
        super().__init__(config, _Connections(first, make, config.max_connections), telemetry)
        self._rate_limiter = check_limiter(rate_limiter)

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
        derived = self._derive(
            timeout=timeout,
            max_retries=max_retries,
            retry_ambiguous=retry_ambiguous,
            deadline=deadline,
            default_headers=default_headers,
        )
        derived._rate_limiter = (  # noqa: SLF001 -- a client of this very class
            self._rate_limiter
            if isinstance(rate_limiter, NotGiven)
            else check_limiter(rate_limiter)
        )
        return derived

    @property
    def rate_limiter(self) -> Limiter | None:
        """The limiter every attempt waits on, if any."""
        return self._rate_limiter

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connections the client owns. Safe to call twice.

        Those of the running event loop close now. Those of event loops that ended were closed
        as they ended; those of a loop still running in another thread close when it ends.
        """
        if self._close():
            await self._pool.aclose()

    async def __aenter__(self) -> Self:
        self._open()
        return self

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
        request, call = encode_say(
            self._config,
            options,
            text=text,
            conv_id=conv_id,
            client_metadata=client_metadata,
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
        # The one event loop check of a turn: each loop has connections of its own.
        loop = current_loop()
        bound = self._pool.pools.last
        if bound is None or bound.loop is not loop:
            bound = await self._enter(loop)
        pool = bound.value
        attempts = self._attempts(request, call, anyio.current_time)
        with self._telemetry.turn(self._config, request, conv_id) as trace:
            if attempts.deadline_at is None:
                reply = await self._with_retries(request, conv_id, attempts, trace, pool)
            else:
                with anyio.move_on_after(attempts.call.deadline):
                    reply = await self._with_retries(request, conv_id, attempts, trace, pool)
                    trace.replied(reply)
                    return reply
                raise attempts.deadline_error()
            trace.replied(reply)
            return reply

    async def _enter(self, loop: object) -> Bound[_Pool]:
        """The connections of an event loop this client has not sent from last."""
        self._check_open()
        return await self._pool.pools.enter(loop)

    async def _with_retries(
        self,
        request: ChatRequest,
        conv_id: str | None,
        attempts: Attempts,
        trace: TurnTrace,
        pool: _Pool,
    ) -> Reply:
        """The attempts of one turn, under the retry policy (see `Attempts`)."""
        try:
            return await self._attempt(request, conv_id, 1, attempts, trace=trace, pool=pool)
        except QuickchatError as exc:
            if not attempts.retry_after(exc):
                raise
        async for attempt in attempts:
            with attempt:
                attempts.begin(attempt.num)
                return await self._attempt(
                    request, conv_id, attempt.num, attempts, trace=trace, pool=pool
                )
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _attempt(
        self,
        request: ChatRequest,
        conv_id: str | None,
        num: int,
        attempts: Attempts,
        *,
        trace: TurnTrace,
        pool: _Pool,
    ) -> Reply:
        """One attempt: wait for the rate and a connection slot, send, decode.

        Its failure is told to the trace and to the turn's `Attempts` (`Attempts.failed`),
        which says when it means that the turn's deadline ran out.
        """
        self._check_open()
        trace.attempt(num)
        try:
            if self._rate_limiter is not None:
                await self._rate_limiter.acquire()
                self._check_open()  # closed while the attempt waited for the rate
            request = attempts.within_deadline(request)
            slots = pool.slots
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                request = await self._wait_for_slot(request, slots)
            try:
                # The message may be going out until the transport answers, or fails and so
                # says whether it sent; a cancellation leaves it so.
                attempts.sending = True
                response = await pool.transport.send(request)
                attempts.sending = False
            except QuickchatError:
                attempts.sending = False
                raise
            finally:
                slots.release()
            return decode_reply(
                response,
                config=self._config,
                conv_id=conv_id,
                attempts=num,
                elapsed=time.monotonic() - attempts.started,
            )
        except QuickchatError as exc:
            overdue = attempts.failed(exc, num=num, trace=trace)
            if overdue is None:
                raise
            raise overdue from exc

    async def _wait_for_slot(self, request: ChatRequest, slots: anyio.Semaphore) -> ChatRequest:
        """Queue for a slot; the wait counts against the attempt's deadline."""
        start = anyio.current_time()
        with anyio.move_on_after(request.timeout.total):
            await slots.acquire()
            shortened = after_slot_wait(request, anyio.current_time() - start)
            if shortened is not None and not self.is_closed:  # closed while it waited
                return shortened
            slots.release()
            self._check_open()
        raise self._slot_timeout(request)
