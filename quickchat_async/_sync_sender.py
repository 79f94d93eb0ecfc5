"""`SyncSender`: the blocking twin of `AsyncSender`, on threads (or gevent's greenlets).

It holds the same configuration (`ClientConfig`, from the same arguments and `QUICKCHAT_*`
variables), decodes with the same wire core and retries under the same policy, through
stamina's synchronous API, with the same attempt rules (`_attempts`). What is its own is the
I/O: a blocking transport, and a semaphore of connection slots shared by the threads that use
the client. It is not an event loop run in a thread: gevent's monkey-patching turns its locks,
sockets and sleeps into cooperative ones, as Locust needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Unpack

from ._attempts import Attempts, after_slot_wait
from ._config import DEFAULT_MAX_RESPONSE_BYTES, Call, CallOptions, ClientConfig, Timeout
from ._exceptions import QuickchatError
from ._models import Reply
from ._sender_base import Pool, SenderBase
from ._telemetry import Telemetry, TurnTrace
from ._transports import SyncBaseTransport, SyncTransport, resolve_sync_transport
from ._types import NOT_GIVEN, JSONValue, NotGiven, Secret
from ._wire import ChatRequest, decode_reply, encode_say


if TYPE_CHECKING:
    from typing import Self

    import httpx
    import httpx2

__all__ = ["SyncSender"]


class SyncSender(SenderBase[SyncTransport, Pool[SyncTransport, threading.Semaphore]]):
    """The part of `Quickchat` that holds its settings and connections, and sends.

    Its base class, and what a `SyncConversation`'s `client` is typed as (at run time, the
    `Quickchat` that made it). It is documented, with its arguments, as `Quickchat`.
    """

    __slots__ = ()

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
        http_client: httpx2.Client | httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        transport: SyncTransport | Literal["httpx2", "httpx", "gevent"] | None = None,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        telemetry: Telemetry | NotGiven | None = NOT_GIVEN,
    ) -> None:
        # As in AsyncSender: no frame of a failed check holds the raw credential.
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
        chosen = resolve_sync_transport(transport, http_client, config.max_connections)
        if isinstance(chosen, SyncBaseTransport):
            config = config.with_user_agent(chosen.user_agent)
        super().__init__(
            config, Pool(chosen, threading.Semaphore(config.max_connections)), telemetry
        )

    def with_options(
        self,
        *,
        timeout: float | Timeout | NotGiven | None = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        retry_ambiguous: bool | NotGiven = NOT_GIVEN,
        deadline: float | NotGiven | None = NOT_GIVEN,
        default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
    ) -> Self:
        """A client with other settings that shares this one's connections.

        Closing it leaves the connections to this client, which still owns them; closing this
        client closes them for both. `default_headers` are merged over this client's.

        Raises:
            ValidationError: a bad value, named.
        """
        return self._derive(
            timeout=timeout,
            max_retries=max_retries,
            retry_ambiguous=retry_ambiguous,
            deadline=deadline,
            default_headers=default_headers,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections the client owns. Safe to call twice."""
        if self._close():
            self._pool.transport.close()

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- one round trip -----------------------------------------------------------------------

    def say(
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
        return self.send(request, conv_id=conv_id, call=call)

    def send(
        self, request: ChatRequest, *, conv_id: str | None = None, call: Call | None = None
    ) -> Reply:
        """Send a prepared request under the retry policy and decode its reply.

        As `AsyncQuickchat.send`: give the `conv_id` the request continues, if any, and the
        turn's settings in `call` (by default the client's). Its `deadline` bounds each attempt
        and every wait between them; nothing can interrupt a blocking call, so it is kept by
        giving each step no more than the time left.

        Raises:
            ClientClosedError: the client was closed.
            APIStatusError: the server answered with an error (see its subclasses).
            APIConnectionError: no usable response (see `outcome_unknown`); `APITimeoutError`
                when an attempt or the whole turn ran out of time.
            UnexpectedResponseError: a 2xx that is not the documented JSON.
        """
        attempts = self._attempts(request, call, time.monotonic)
        with self._telemetry.turn(self._config, request, conv_id) as trace:
            reply = self._with_retries(request, conv_id, attempts, trace)
            trace.replied(reply)
            return reply

    def _with_retries(
        self, request: ChatRequest, conv_id: str | None, attempts: Attempts, trace: TurnTrace
    ) -> Reply:
        """The attempts of one turn, under the retry policy (see `Attempts`)."""
        try:
            return self._attempt(request, conv_id, 1, attempts, trace)
        except QuickchatError as exc:
            if not attempts.retry_after(exc):
                raise
        for attempt in attempts:
            with attempt:
                attempts.begin(attempt.num)
                return self._attempt(request, conv_id, attempt.num, attempts, trace)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _attempt(
        self,
        request: ChatRequest,
        conv_id: str | None,
        num: int,
        attempts: Attempts,
        trace: TurnTrace,
    ) -> Reply:
        """One attempt: wait for a connection slot, send, decode.

        Its failure is told to the trace and to the turn's `Attempts` (`Attempts.failed`),
        which says when it means that the turn's deadline ran out.
        """
        self._check_open()
        trace.attempt(num)
        try:
            request = attempts.within_deadline(request)
            slots = self._pool.slots
            if not slots.acquire(blocking=False):
                request = self._wait_for_slot(request)
            try:
                # The message may be going out until the transport answers, or fails and so
                # says whether it sent; an interruption (KeyboardInterrupt) leaves it so.
                attempts.sending = True
                response = self._pool.transport.send(request)
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

    def _wait_for_slot(self, request: ChatRequest) -> ChatRequest:
        """Queue for a slot; the wait counts against the attempt's deadline."""
        slots = self._pool.slots
        start = time.monotonic()
        if slots.acquire(timeout=request.timeout.total):
            shortened = after_slot_wait(request, time.monotonic() - start)
            if shortened is not None and not self.is_closed:  # closed while it waited
                return shortened
            slots.release()
            self._check_open()
        raise self._slot_timeout(request)
