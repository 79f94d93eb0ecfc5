"""What the async and the blocking sender share, with no I/O: settings, lifecycle state, repr.

`AsyncSender` (on anyio) and `SyncSender` (blocking) each add their own I/O: the connection
slots they wait on, how they close their transport, and the loop of attempts. Everything they
know about a client's configuration, whether it is open, where its turns are reported
(telemetry), and how a response becomes a `Reply` is here, once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from ._attempts import Attempts
from ._config import Call, ClientConfig, Timeout
from ._exceptions import ClientClosedError
from ._observe import resolve_telemetry
from ._telemetry import Telemetry
from ._types import Flavor, NotGiven
from ._wire import ChatRequest, slot_timeout_error


if TYPE_CHECKING:
    from typing import Self

    from ._exceptions import APITimeoutError

__all__ = ["Connections", "Pool", "SenderBase"]

_TransportT = TypeVar("_TransportT")
_TransportT_co = TypeVar("_TransportT_co", covariant=True)
_SlotsT = TypeVar("_SlotsT")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class Connections(Protocol[_TransportT_co]):
    """What a sender needs of the connections it shares with the clients derived from it."""

    @property
    def transport(self) -> _TransportT_co:
        """The transport requests go through."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the client that owns them closed them."""
        ...

    def mark_closed(self) -> None:
        """Refuse further use: the owner is closing them."""
        ...


class Pool(Generic[_TransportT, _SlotsT]):
    """The connections a client shares with the clients derived from it (`with_options`).

    The connection slots are where a request waits when `max_connections` are in flight:
    outside the HTTP engine, in call order, within the attempt's deadline.
    """

    __slots__ = ("closed", "slots", "transport")

    def __init__(self, transport: _TransportT, slots: _SlotsT) -> None:
        self.transport = transport
        self.slots = slots
        self.closed = False

    def mark_closed(self) -> None:
        """Refuse further use: the owner is closing them."""
        self.closed = True


_ConnectionsT = TypeVar("_ConnectionsT", bound=Connections[Any])


class SenderBase(Generic[_TransportT, _ConnectionsT]):
    """A client's configuration, its shared connections and its open/closed state."""

    __slots__ = ("_config", "_owns_pool", "_pool", "_state", "_telemetry")

    def __init__(
        self,
        config: ClientConfig,
        pool: _ConnectionsT,
        telemetry: Telemetry | NotGiven | None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._owns_pool = True
        self._telemetry: Telemetry = resolve_telemetry(telemetry)
        self._state = _State.UNOPENED

    def _derive(
        self,
        *,
        timeout: object,
        max_retries: object,
        retry_ambiguous: object,
        deadline: object,
        default_headers: object,
    ) -> Self:
        """A client with other settings on this one's connections (see `with_options`).

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
        derived._pool = self._pool
        derived._owns_pool = False
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
    def deadline(self) -> float | None:
        """Seconds a whole turn may take, every attempt and wait included (None: no bound)."""
        return self._config.deadline

    @property
    def transport(self) -> _TransportT:
        """The transport requests go through."""
        return cast("_TransportT", self._pool.transport)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether the client was closed (itself, or the one it derives from)."""
        return self._state is _State.CLOSED or self._pool.closed

    def _open(self) -> None:
        """Enter the client's `with` block.

        Raises:
            ClientClosedError: the client was closed.
        """
        if self.is_closed:
            raise ClientClosedError(
                f"This {type(self).__name__} client is closed; create a new one to open it again."
            )
        self._state = _State.OPENED

    def _close(self) -> bool:
        """Mark the client closed; True when the caller must now close the transport."""
        if self._state is _State.CLOSED:
            return False
        self._state = _State.CLOSED
        if not self._owns_pool:
            return False
        self._pool.mark_closed()
        return True

    def _check_open(self) -> None:
        """Refuse an attempt on a closed client (also between attempts: closed during a wait).

        Raises:
            ClientClosedError: the client was closed.
        """
        if self.is_closed:
            raise ClientClosedError(
                f"This {type(self).__name__} client is closed; create a new one to keep talking."
            )

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

    # --- one attempt --------------------------------------------------------------------------

    def _attempts(
        self, request: ChatRequest, call: Call | None, clock: Callable[[], float]
    ) -> Attempts:
        """A turn's attempts, with its per-call settings (by default the client's)."""
        return Attempts(
            self._config.default_call if call is None else call,
            url=request.url,
            retry_ambiguous=self._config.retry_ambiguous,
            clock=clock,
        )

    def _slot_timeout(self, request: ChatRequest) -> APITimeoutError:
        """The error of an attempt that found no free connection slot in time."""
        return slot_timeout_error(
            url=request.url, total=request.timeout.total, slots=self._config.max_connections
        )
