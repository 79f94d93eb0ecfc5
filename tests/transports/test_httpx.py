"""HttpxTransport, the legacy path: a caller's httpx 0.28 client, mocked with respx.

respx routes requests made with httpx (through `httpx.MockTransport(router.async_handler)`);
httpx2 is another library, which it does not see, so the default engine's tests use
`httpx2.MockTransport` instead.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import respx

from quickchat_async import (
    APIConnectionError,
    APITimeoutError,
    AsyncQuickchat,
    ChatRequest,
    HttpxTransport,
    InternalServerError,
    __version__,
)
from tests.conftest import API_KEY, CURRENT_URL, LEGACY_URL, SCENARIO_ID, TOKEN

from .conftest import refused_port


pytestmark = pytest.mark.anyio

MakeClient = Callable[..., AsyncQuickchat]


def reply(conv_id: str = "conv-1", ord_number: int = 3) -> httpx.Response:
    return httpx.Response(
        200, json={"reply": "Hi there!", "conv_id": conv_id, "ord_number": ord_number}
    )


def sent(route: respx.Route) -> dict[str, object]:
    """The JSON body of the route's last request."""
    return json.loads(route.calls.last.request.content)  # type: ignore[no-any-return]


@pytest.fixture(name="router")
def _router() -> Iterator[respx.Router]:
    """Routes for the current flavor's host; every route a test adds must be called."""
    router = respx.Router(base_url=CURRENT_URL, assert_all_called=True)
    yield router
    router.assert_all_called()


@pytest.fixture(name="legacy_router")
def _legacy_router() -> Iterator[respx.Router]:
    """Routes for the legacy flavor's host; every route a test adds must be called."""
    router = respx.Router(base_url=LEGACY_URL, assert_all_called=True)
    yield router
    router.assert_all_called()


@pytest.fixture(name="make_client")
async def _make_client() -> AsyncIterator[MakeClient]:
    """Build clients on an httpx client routed by `router`; all closed afterwards."""
    made: list[tuple[AsyncQuickchat, httpx.AsyncClient]] = []

    def make(router: respx.Router, **options: object) -> AsyncQuickchat:
        http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        if "api_key" not in options:
            options.setdefault("token", TOKEN)
        client = AsyncQuickchat(scenario_id=SCENARIO_ID, http_client=http, **options)  # type: ignore[arg-type]
        made.append((client, http))
        return client

    yield make
    for client, http in made:
        await client.aclose()
        await http.aclose()


class TestOnTheWire:
    async def test_current_flavor(self, router: respx.Router, make_client: MakeClient):
        """An httpx client carries the Bearer header and the documented body, nothing more."""
        route = router.post("/chat").mock(return_value=reply(conv_id="conv-uuid-1234"))
        client = make_client(router)

        await client.say(
            "Hello!",
            conv_id="conv-uuid-1234",
            client_metadata={"userId": 12, "website": "mywebsite.com"},
            message_context="The user's name is John.",
        )

        assert isinstance(client.transport, HttpxTransport)
        request = route.calls.last.request
        assert request.url == "https://app.quickchat.ai/chat"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == (
            f"quickchat-async/{__version__} httpx/{httpx.__version__}"
        )
        assert sent(route) == {
            "scenario_id": SCENARIO_ID,
            "conv_id": "conv-uuid-1234",
            "text": "Hello!",
            "message_context": "The user's name is John.",
            "client_metadata": {"userId": 12, "website": "mywebsite.com"},
        }

    async def test_legacy_flavor(self, legacy_router: respx.Router, make_client: MakeClient):
        """The legacy flavor puts api_key first in the body and sends no Authorization."""
        route = legacy_router.post("/chat").mock(return_value=reply(conv_id="abcd1234"))
        client = make_client(legacy_router, api_key=API_KEY)

        await client.say("Hello!", conv_id="abcd1234")

        request = route.calls.last.request
        assert request.url == "https://chat.quickchat.ai/chat"
        assert "authorization" not in request.headers
        assert list(sent(route)) == ["api_key", "scenario_id", "conv_id", "text"]

    async def test_conversation(self, router: respx.Router, make_client: MakeClient):
        """A conversation on an httpx client keeps and sends its conv_id."""
        route = router.post("/chat").mock(side_effect=[reply(), reply(ord_number=5)])
        conv = make_client(router).conversation(kb_topic="billing")

        await conv.say("Hello!")
        await conv.say("Again")

        assert sent(route)["conv_id"] == "conv-1"
        assert sent(route)["client_metadata"] == {"kb_topic": "billing"}
        assert conv.history[-1].reply.ord_number == 5  # type: ignore[union-attr]

    async def test_callers_client_stays_open(self, router: respx.Router):
        """The SDK never closes an httpx client it was given."""
        router.post("/chat").mock(return_value=reply())
        http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))

        async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, http_client=http) as c:
            await c.say("Hello!")
            assert repr(c.transport) == "<HttpxTransport caller's httpx.AsyncClient>"

        assert not http.is_closed
        await http.aclose()

    async def test_alone(self):
        """HttpxTransport sends on its own, as the Transport protocol describes."""
        transport = HttpxTransport()
        request = ChatRequest(f"http://127.0.0.1:{refused_port()}/chat", {}, b"{}")

        async with transport:
            with pytest.raises(APIConnectionError, match="could not connect") as info:
                await transport.send(request)

        assert not info.value.outcome_unknown
        assert transport.client.is_closed

    async def test_owned_client(self):
        """transport="httpx" makes an httpx client of the SDK's own, closed with the client."""
        client = AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport="httpx")
        transport = client.transport

        async with client:
            pass

        assert isinstance(transport, HttpxTransport)
        assert repr(transport) == "<HttpxTransport owned httpx.AsyncClient>"
        assert transport.client.is_closed


class TestRetries:
    async def test_unsent_failures_retried(self, router: respx.Router, make_client: MakeClient):
        """A refused connection cannot have been processed: it is retried, then succeeds."""
        route = router.post("/chat").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), reply()]
        )

        assert (await make_client(router).say("Hello!")).text == "Hi there!"
        assert route.call_count == 3

    async def test_retries_are_bounded(self, router: respx.Router, make_client: MakeClient):
        """After max_retries the connection error surfaces, saying nothing was sent."""
        route = router.post("/chat").mock(side_effect=httpx.ConnectError("refused"))

        with pytest.raises(APIConnectionError, match="not sent") as info:
            await make_client(router).say("Hello!")

        assert not info.value.outcome_unknown
        assert route.call_count == 3

    @pytest.mark.parametrize(
        ("error", "cls"),
        [
            (httpx.ReadTimeout("slow"), APITimeoutError),
            (httpx.RemoteProtocolError("Server disconnected."), APIConnectionError),
            (httpx.ReadError("reset"), APIConnectionError),
            (httpx.WriteError("broken pipe"), APIConnectionError),
            (httpx.DecodingError("bad gzip"), APIConnectionError),
        ],
    )
    async def test_ambiguous_failures_not_retried(
        self, router: respx.Router, make_client: MakeClient, error, cls
    ):
        """Failures after sending may have been recorded: no retry, outcome_unknown set."""
        route = router.post("/chat").mock(side_effect=error)

        with pytest.raises(cls, match="may or may not have recorded") as info:
            await make_client(router).say("Hello!")

        assert type(info.value) is cls
        assert info.value.outcome_unknown
        assert route.call_count == 1

    async def test_retry_ambiguous(self, router: respx.Router, make_client: MakeClient):
        """With retry_ambiguous=True, read timeouts and 5xx are retried too."""
        route = router.post("/chat").mock(
            side_effect=[httpx.ReadTimeout("slow"), httpx.Response(502, text="bad"), reply()]
        )

        assert (await make_client(router, retry_ambiguous=True).say("Hello!")).text
        assert route.call_count == 3

    async def test_500_not_retried(self, router: respx.Router, make_client: MakeClient):
        """A 500 may come after the message was recorded: not retried by default."""
        route = router.post("/chat").mock(return_value=httpx.Response(500, text="oops"))

        with pytest.raises(InternalServerError):
            await make_client(router).say("Hello!")

        assert route.call_count == 1


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("exc", "cls", "unknown"),
        [
            (httpx.ConnectError("refused"), APIConnectionError, False),
            (httpx.ConnectTimeout("slow"), APITimeoutError, False),
            (httpx.PoolTimeout("full"), APITimeoutError, False),
            (httpx.ReadTimeout("slow"), APITimeoutError, True),
            (httpx.WriteTimeout("slow"), APITimeoutError, True),
            (httpx.RemoteProtocolError("gone"), APIConnectionError, True),
            (httpx.ReadError("reset"), APIConnectionError, True),
            (httpx.ProxyError("no"), APIConnectionError, True),
            (httpx.DecodingError("bad gzip"), APIConnectionError, True),
        ],
    )
    def test_what_each_error_means(self, exc, cls, unknown):
        """Connect-phase failures are safe; anything after sending has an unknown outcome."""
        error = HttpxTransport.engine.translate(exc, url=f"{CURRENT_URL}/chat", may_be_sent=True)

        assert type(error) is cls
        assert error.outcome_unknown is unknown
        assert f"{CURRENT_URL}/chat" in error.message
