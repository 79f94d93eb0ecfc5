"""Which transport a client's `transport=` and `http_client=` arguments give it."""

from __future__ import annotations

import httpx
import httpx2
import pytest

from quickchat_async import (
    AiohttpTransport,
    AsyncQuickchat,
    BaseTransport,
    ChatRequest,
    HTTPResponse,
    Httpx2Transport,
    HttpxTransport,
    Transport,
    ValidationError,
    __version__,
)
from tests.conftest import SCENARIO_ID, TOKEN


pytestmark = pytest.mark.anyio


def client(**options: object) -> AsyncQuickchat:
    return AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, **options)  # type: ignore[arg-type]


class Plain:
    """A transport of the caller's own: the two methods, no base class."""

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class TestChoice:
    async def test_default_is_httpx2(self):
        """With neither argument, the client owns an httpx2 transport of max_connections."""
        async with client() as made:
            transport = made.transport
            assert isinstance(transport, Httpx2Transport)
            assert repr(transport) == "<Httpx2Transport owned httpx2.AsyncClient>"
            assert made.config.headers["User-Agent"] == transport.user_agent
        assert transport.client.is_closed

    @pytest.mark.parametrize(
        ("name", "cls"), [("httpx2", Httpx2Transport), ("httpx", HttpxTransport)]
    )
    async def test_by_name(self, name, cls):
        """An engine's name gives its transport, owned by the client."""
        async with client(transport=name) as made:
            assert type(made.transport) is cls
            assert made.config.headers["User-Agent"].startswith(f"quickchat-async/{__version__} ")
            assert made.config.headers["User-Agent"].split()[1].startswith(f"{name}/")

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_aiohttp_by_name(self):
        """The name aiohttp gives an AiohttpTransport, on asyncio."""
        async with client(transport="aiohttp", max_connections=7) as made:
            assert repr(made.transport) == "<AiohttpTransport unopened max_connections=7>"
            assert isinstance(made.transport, AiohttpTransport)

    async def test_callers_clients(self):
        """An httpx2 or an httpx client of the caller's is wrapped in its engine's transport."""
        async with httpx2.AsyncClient() as http2, httpx.AsyncClient() as http:
            assert type(client(http_client=http2).transport) is Httpx2Transport
            assert type(client(http_client=http).transport) is HttpxTransport

    async def test_a_transport_of_ones_own(self):
        """Anything with send() and aclose() is used as it is, with the SDK's User-Agent."""
        plain = Plain()

        made = client(transport=plain)

        assert made.transport is plain
        assert isinstance(plain, Transport)
        assert not isinstance(plain, BaseTransport)
        assert made.config.headers["User-Agent"] == f"quickchat-async/{__version__}"

    async def test_a_function_that_makes_one(self):
        """A function or a class as transport= makes the client's transports, owned by it."""
        by_function = client(transport=lambda: Httpx2Transport(max_connections=3))
        by_class = client(transport=HttpxTransport)

        assert type(by_function.transport) is Httpx2Transport
        assert type(by_class.transport) is HttpxTransport
        assert by_class.config.headers["User-Agent"] == by_class.transport.user_agent  # type: ignore[attr-defined]
        await by_function.aclose()
        await by_class.aclose()
        assert by_function.transport.client.is_closed  # type: ignore[attr-defined]

    def test_a_function_that_makes_something_else(self):
        """A function that makes no transport is refused at construction, naming what it made."""
        with pytest.raises(ValidationError, match="made a str"):
            client(transport=lambda: "httpx2")

    async def test_both_refused(self):
        """http_client and transport cannot both be given."""
        async with httpx2.AsyncClient() as http:
            with pytest.raises(ValidationError, match="not both"):
                client(http_client=http, transport="httpx2")

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"transport": "carrier-pigeon"}, "Unknown transport 'carrier-pigeon'; use 'httpx2'"),
            ({"transport": object()}, "send"),
            ({"http_client": object()}, "httpx2.AsyncClient or an httpx.AsyncClient"),
        ],
    )
    def test_refused(self, options, match):
        """An unknown engine, or an object that is no transport or client, is refused."""
        with pytest.raises(ValidationError, match=match):
            client(**options)

    @pytest.mark.parametrize(
        "make",
        [httpx2.AsyncClient, httpx.AsyncClient, httpx2.Client, httpx.Client],
        ids=["httpx2.AsyncClient", "httpx.AsyncClient", "httpx2.Client", "httpx.Client"],
    )
    def test_an_httpx_client_given_as_the_transport(self, make):
        """An httpx client passed as transport= is refused when the client is made.

        It has send() and aclose() too; the error points at http_client=, where it used to be a
        bare AttributeError at the first turn.
        """
        with pytest.raises(ValidationError, match="as http_client="):
            client(transport=make())
