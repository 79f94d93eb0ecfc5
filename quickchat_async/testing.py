"""Test your bot against a local Quickchat emulator, with no token and no network.

`Emulator` holds an `EmulatorService` (the emulator's core: the API's rules, what it
recorded, the faults to inject) and hands out clients wired to it, async (`client()`) or
blocking (`sync_client()`): in process through an httpx2 transport (no socket; asyncio and
trio, or threads), or, inside ``async with`` (or ``with``), over a real loopback socket served
by uvicorn (extra ``[emulator]``).

A pytest example to copy (with the ``anyio`` pytest plugin that anyio installs)::

    import pytest
    from quickchat_async.testing import Emulator


    @pytest.fixture
    def emulator():
        return Emulator()


    @pytest.mark.anyio
    async def test_bot_sends_the_topic(emulator):
        async with emulator.client() as client:
            conv = client.conversation(kb_topic="billing")
            reply = await conv.say("How do refunds work?")
        sent = emulator.messages(reply.conv_id)[1]
        assert sent.client_metadata == {"kb_topic": "billing"}


    @pytest.mark.anyio
    async def test_bot_survives_a_rate_limit(emulator):
        emulator.faults.script(["rate_limit"])  # the next request gets a 429
        async with emulator.client() as client:
            assert (await client.say("Hi")).text


    def test_a_blocking_bot(emulator):
        with emulator.sync_client() as client:
            assert client.conversation().say("Hi").text
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

import httpx2

from ._client import AsyncQuickchat
from ._exceptions import QuickchatError
from ._sync_client import Quickchat
from ._transports import Httpx2Transport, SyncHttpx2Transport
from .emulator import (
    EmulatorService,
    EmulatorTransport,
    FaultInjector,
    KnowledgeBase,
    RecordedConversation,
    RecordedMessage,
    Scenario,
    Stats,
    SyncEmulatorTransport,
)


if TYPE_CHECKING:
    from .emulator import ServerHandle


__all__ = ["Emulator"]

#: The base URL in-process clients use; nothing listens there, the transport answers.
IN_PROCESS_URL = "http://127.0.0.1:9"


@final
class Emulator:
    """A Quickchat emulator for tests: in process by default, served on loopback in ``async with``.

    Args:
        service: the emulator core to use; by default a new one, made from the other arguments.
        scenarios: the AI Agents served (default: scenario ``demo`` with token ``demo-token``
            and api_key ``demo-key``).
        knowledge_base: what replies draw on (default: the bundled articles).
        latency: seconds added before every reply.
        seed: makes conv_ids and random faults reproducible.

    Example::

        emulator = Emulator()
        async with emulator.client() as client:          # in process, no socket
            reply = await client.say("Hello")

        async with Emulator() as served:                  # uvicorn on 127.0.0.1, a free port
            async with served.client() as client:        # talks to served.base_url
                reply = await client.say("Hello")

        with emulator.sync_client() as client:            # blocking, in process
            reply = client.say("Hello")

        with Emulator() as served:                        # served, from synchronous code
            with served.sync_client() as client:
                reply = client.say("Hello")
    """

    def __init__(
        self,
        service: EmulatorService | None = None,
        *,
        scenarios: Iterable[Scenario] | None = None,
        knowledge_base: KnowledgeBase | None = None,
        latency: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if service is not None and (
            scenarios is not None or knowledge_base is not None or latency or seed is not None
        ):
            raise ValueError("Pass service= or the options to build one, not both.")
        if service is None:
            options: dict[str, Any] = {"latency": latency, "seed": seed}
            if scenarios is not None:
                options["scenarios"] = tuple(scenarios)
            if knowledge_base is not None:
                options["knowledge_base"] = knowledge_base
            service = EmulatorService(**options)
        self._service = service
        self._server: ServerHandle | None = None

    def __repr__(self) -> str:
        where = self._server.base_url if self._server is not None else "in process"
        return f"<Emulator {where} {self._service!r}>"

    # --- what to connect with ----------------------------------------------------------------

    @property
    def service(self) -> EmulatorService:
        """The emulator's core: its record, its counters and its faults."""
        return self._service

    @property
    def faults(self) -> FaultInjector:
        """Script faults (``emulator.faults.script(["drop_after", None])``) or set their rates."""
        return self._service.faults

    @property
    def scenario(self) -> Scenario:
        """The first scenario, the one `client()` uses."""
        return self._service.scenarios[0]

    @property
    def scenario_id(self) -> str:
        """The first scenario's ID."""
        return self.scenario.scenario_id

    @property
    def token(self) -> str:
        """A Bearer token of the first scenario (current flavor)."""
        return _first(self.scenario.tokens, "token")

    @property
    def api_key(self) -> str:
        """An api_key of the first scenario (legacy flavor)."""
        return _first(self.scenario.api_keys, "api_key")

    @property
    def served(self) -> bool:
        """Whether the emulator is being served on a loopback socket."""
        return self._server is not None

    @property
    def base_url(self) -> str:
        """Where clients reach the emulator: its loopback URL when served, else a placeholder.

        In process, the URL is never dialled: the transport answers.
        """
        return self._server.base_url if self._server is not None else IN_PROCESS_URL

    def http_client(self, **kwargs: Any) -> httpx2.AsyncClient:  # noqa: ANN401
        """An `httpx2.AsyncClient` that reaches the emulator: in process, or over loopback.

        Args:
            **kwargs: passed to `httpx2.AsyncClient` (not ``transport`` in process).
        """
        if self._server is None:
            return httpx2.AsyncClient(transport=EmulatorTransport(self._service), **kwargs)
        return httpx2.AsyncClient(**kwargs)

    def sync_http_client(self, **kwargs: Any) -> httpx2.Client:  # noqa: ANN401
        """An `httpx2.Client` that reaches the emulator: in process, or over loopback.

        Args:
            **kwargs: passed to `httpx2.Client` (not ``transport`` in process).
        """
        if self._server is None:
            return httpx2.Client(transport=SyncEmulatorTransport(self._service), **kwargs)
        return httpx2.Client(**kwargs)

    def client(
        self,
        *,
        flavor: Literal["current", "legacy"] = "current",
        **kwargs: Any,  # noqa: ANN401 -- AsyncQuickchat's own options
    ) -> AsyncQuickchat:
        """An `AsyncQuickchat` wired to this emulator, with the first scenario's credentials.

        In process, it talks through `EmulatorTransport` (no socket); while served, over
        loopback with the transport you choose (``transport="aiohttp"`` works there). Close it
        as any client (``async with emulator.client() as client:``).

        Args:
            flavor: ``"current"`` (Bearer token) or ``"legacy"`` (api_key in the body).
            **kwargs: any other `AsyncQuickchat` option: ``timeout``, ``max_retries``,
                ``max_connections``, ``transport`` (served only)...
        """
        options = self._options(flavor, kwargs)
        if self._server is None and options.get("http_client") is None:
            options["transport"] = self._in_process_transport  # one for each event loop
        return AsyncQuickchat(**options)

    def sync_client(
        self,
        *,
        flavor: Literal["current", "legacy"] = "current",
        **kwargs: Any,  # noqa: ANN401 -- Quickchat's own options
    ) -> Quickchat:
        """A blocking `Quickchat` wired to this emulator, with the first scenario's credentials.

        In process, it talks through `SyncEmulatorTransport` (no socket); while served, over
        loopback with the transport you choose. Close it as any client
        (``with emulator.sync_client() as client:``).

        Args:
            flavor: ``"current"`` (Bearer token) or ``"legacy"`` (api_key in the body).
            **kwargs: any other `Quickchat` option: ``timeout``, ``max_retries``,
                ``max_connections``, ``transport`` (served only)...
        """
        options = self._options(flavor, kwargs)
        if self._server is None and options.get("http_client") is None:
            options["transport"] = SyncHttpx2Transport(self.sync_http_client(), close_client=True)
        return Quickchat(**options)

    def _options(self, flavor: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A client's options: this emulator's URL and credentials, then the caller's."""
        options: dict[str, Any] = {"scenario_id": self.scenario_id, "base_url": self.base_url}
        if flavor == "current":
            options["token"] = self.token
        elif flavor == "legacy":
            options["api_key"] = self.api_key
        else:
            raise ValueError(f"flavor must be 'current' or 'legacy', not {flavor!r}.")
        options.update(kwargs)
        if (
            self._server is None
            and options.get("http_client") is None
            and options.get("transport") not in (None, "httpx2")
        ):
            raise ValueError(
                "In process, the emulator answers through httpx2: serve it "
                "(`async with emulator:` or `with emulator:`) to use another transport."
            )
        return options

    def _in_process_transport(self) -> Httpx2Transport:
        """A transport to the emulator in process; a client makes one per event loop."""
        return Httpx2Transport(self.http_client(), close_client=True)

    # --- what the server recorded -----------------------------------------------------------

    def conversations(self) -> tuple[RecordedConversation, ...]:
        """Every conversation the emulator holds, oldest first."""
        return self._service.conversations()

    def conversation(self, conv_id: str) -> RecordedConversation:
        """One conversation's export: its messages with their context and metadata.

        Raises:
            KeyError: no such conversation.
        """
        return self._service.conversation(conv_id)

    def messages(self, conv_id: str) -> tuple[RecordedMessage, ...]:
        """The messages of a conversation, greeting first.

        Raises:
            KeyError: no such conversation.
        """
        return self._service.messages(conv_id)

    def user_messages(self, conv_id: str) -> tuple[str, ...]:
        """The texts the user sent in a conversation, in order.

        Raises:
            KeyError: no such conversation.
        """
        return self._service.user_messages(conv_id)

    def stats(self) -> Stats:
        """Request counters: by status and by fault."""
        return self._service.stats()

    def reset(self) -> None:
        """Forget conversations, counters and scripted faults (the configuration stays)."""
        self._service.reset()

    # --- serving -----------------------------------------------------------------------------

    async def start(self, **options: Any) -> str:  # noqa: ANN401 -- `aserve`'s options
        """Serve the emulator with uvicorn on a free loopback port; returns the base URL.

        Args:
            **options: passed to `quickchat_async.emulator.aserve` (``port``, ``latency``...).

        Raises:
            RuntimeError: already served.
            ImportError: the ``[emulator]`` extra (Starlette, uvicorn) is not installed.
        """
        self._refuse_second_server()
        from .emulator import aserve  # noqa: PLC0415 -- needs the [emulator] extra

        self._server = await aserve(self._service, **options)
        return self._server.base_url

    async def stop(self) -> None:
        """Stop serving; does nothing if not served. Clients made while served stop working."""
        server, self._server = self._server, None
        if server is not None:
            await server.astop()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Emulator:
        """Serve the emulator from synchronous code, as ``async with`` does from async code.

        Raises:
            RuntimeError: already served.
            ImportError: the ``[emulator]`` extra (Starlette, uvicorn) is not installed.
        """
        self._refuse_second_server()
        from .emulator import serve  # noqa: PLC0415 -- needs the [emulator] extra

        self._server = serve(self._service)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def _refuse_second_server(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"The emulator is already served at {self._server.base_url}.")


def _first(values: tuple[str, ...], what: str) -> str:
    if not values:
        raise QuickchatError(f"The emulator's first scenario has no {what}.")
    return values[0]
