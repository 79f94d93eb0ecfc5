"""quickchat_async.testing.Emulator: clients wired to the emulator, in process or on loopback."""

from __future__ import annotations

import httpx2
import pytest

from quickchat_async import (
    ChatRequest,
    Flavor,
    HTTPResponse,
    Httpx2Transport,
    HttpxTransport,
    QuickchatError,
    RateLimitError,
    ScenarioNotFoundError,
)
from quickchat_async.emulator import (
    EmulatorService,
    Fault,
    KnowledgeBase,
    Scenario,
    bundled_kb,
)
from quickchat_async.testing import IN_PROCESS_URL, Emulator

from .conftest import API_KEY, SCENARIO_ID, TOKEN


pytestmark = pytest.mark.anyio


class NotHttpx2:
    """A Transport that is not httpx2 (it never gets to send anything here)."""

    async def send(self, request: ChatRequest, /) -> HTTPResponse:  # pragma: no cover
        raise NotImplementedError

    async def aclose(self) -> None:  # pragma: no cover
        pass


class TestConfiguration:
    def test_defaults(self):
        """By default: the demo scenario and its credentials, in process."""
        emulator = Emulator()

        assert (emulator.scenario_id, emulator.token, emulator.api_key) == (
            "demo",
            "demo-token",
            "demo-key",
        )
        assert not emulator.served
        assert emulator.base_url == IN_PROCESS_URL
        assert repr(emulator).startswith("<Emulator in process <EmulatorService")

    def test_options_build_the_service(self):
        """scenarios, knowledge_base, latency and seed configure the service it builds."""
        kb = KnowledgeBase(bundled_kb().articles[:2])
        emulator = Emulator(
            scenarios=[Scenario("mine", tokens="t", api_keys="k")],
            knowledge_base=kb,
            latency=0.5,
            seed=7,
        )

        service = emulator.service
        assert (emulator.scenario_id, emulator.token, emulator.api_key) == ("mine", "t", "k")
        assert service.knowledge_base is kb
        assert (service.latency, service.seed) == (0.5, 7)

    def test_a_service_of_your_own(self):
        """An existing service is used as is."""
        service = EmulatorService()

        emulator = Emulator(service)

        assert emulator.service is service
        assert emulator.faults is service.faults

    @pytest.mark.parametrize(
        "options",
        [{"latency": 1.0}, {"seed": 1}, {"scenarios": []}, {"knowledge_base": bundled_kb()}],
    )
    def test_service_and_options_conflict(self, options):
        """A service and options to build one are refused together."""
        with pytest.raises(ValueError, match="not both"):
            Emulator(EmulatorService(), **options)

    def test_credentials_missing_from_the_scenario(self):
        """A scenario without a token (or api_key) says so when asked for one."""
        emulator = Emulator(scenarios=[Scenario("bare")])

        with pytest.raises(QuickchatError, match="has no token"):
            _ = emulator.token
        with pytest.raises(QuickchatError, match="has no api_key"):
            _ = emulator.api_key


class TestInProcess:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_both_flavors(self, emulator: Emulator, flavor):
        """client() speaks either flavor to the emulator, with no socket (nothing listens)."""
        async with emulator.client(flavor=flavor) as client:
            reply = await client.say("Hello")

        assert client.flavor is Flavor(flavor)
        assert client.base_url == IN_PROCESS_URL
        assert isinstance(client.transport, Httpx2Transport)
        assert emulator.messages(reply.conv_id)[1].flavor.value == flavor

    def test_the_scenarios_credentials(self, emulator: Emulator):
        """client() fills in the first scenario's ID and credential for the flavor."""
        assert (emulator.scenario_id, emulator.token, emulator.api_key) == (
            SCENARIO_ID,
            TOKEN,
            API_KEY,
        )
        assert emulator.client().scenario_id == SCENARIO_ID

    def test_unknown_flavor(self):
        """A flavor that is neither current nor legacy is a ValueError."""
        with pytest.raises(ValueError, match="flavor must be 'current' or 'legacy'"):
            Emulator().client(flavor="future")  # type: ignore[arg-type]

    async def test_client_options(self, emulator: Emulator):
        """Other options go to AsyncQuickchat."""
        async with emulator.client(max_retries=0, timeout=3.0) as client:
            assert client.max_retries == 0
            assert client.timeout.total == 3.0

    @pytest.mark.parametrize(
        "transport", ["aiohttp", "httpx", NotHttpx2()], ids=["aiohttp", "httpx", "instance"]
    )
    def test_other_transports_need_serving(self, emulator: Emulator, transport):
        """In process only httpx2 can reach the emulator: another transport is a ValueError."""
        with pytest.raises(ValueError, match="answers through httpx2: serve it"):
            emulator.client(transport=transport)

    async def test_transport_httpx2_is_fine(self, emulator: Emulator):
        """transport="httpx2" is what it uses anyway."""
        async with emulator.client(transport="httpx2") as client:
            assert (await client.say("Hi")).text

    async def test_your_own_http_client(self, emulator: Emulator):
        """A caller's httpx2 client from http_client() is used, and left open."""
        async with emulator.http_client() as http:
            async with emulator.client(http_client=http) as client:
                await client.say("Hi")
            assert not http.is_closed

        assert emulator.stats().replied == 1

    async def test_http_client(self, emulator: Emulator):
        """http_client() is a plain httpx2 client that posts to the emulator; any host will do."""
        async with emulator.http_client(headers={"X-App": "bot"}) as http:
            response = await http.post(
                "http://anywhere/chat",
                json={"scenario_id": SCENARIO_ID, "text": "Hi"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )

        assert isinstance(http, httpx2.AsyncClient)
        assert response.json()["ord_number"] == 3
        assert response.request.headers["x-app"] == "bot"
        assert emulator.stats().replied == 1


class TestRecord:
    async def test_accessors(self):
        """conversations, conversation, messages and user_messages show what the server got."""
        emulator = Emulator()
        async with emulator.client() as client:
            conv = client.conversation(kb_topic="billing", metadata={"user": "u-1"})
            await conv.say("How do refunds work?", context="VIP customer")
            reply = await conv.say("Thanks")
        conv_id = reply.conv_id

        [recorded] = emulator.conversations()
        assert recorded == emulator.conversation(conv_id)
        assert recorded.messages == emulator.messages(conv_id)
        assert emulator.user_messages(conv_id) == ("How do refunds work?", "Thanks")
        first = emulator.messages(conv_id)[1]
        assert first.message_context == "VIP customer"
        assert first.client_metadata == {"kb_topic": "billing", "user": "u-1"}
        assert emulator.messages(conv_id)[3].message_context is None

    def test_unknown_conversation(self):
        """An unknown conv_id is a KeyError."""
        emulator = Emulator()

        for accessor in (emulator.conversation, emulator.messages, emulator.user_messages):
            with pytest.raises(KeyError):
                accessor("nope")

    async def test_faults_stats_and_reset(self):
        """Scripted faults hit the client; stats count them; reset forgets it all."""
        emulator = Emulator()
        emulator.faults.script(["rate_limit", Fault("rate_limit", retry_after=0)])

        async with emulator.client(max_retries=0) as client:
            with pytest.raises(RateLimitError):
                await client.say("Hi")
        async with emulator.client(max_retries=1) as client:
            assert (await client.say("Hi")).text

        stats = emulator.stats()
        assert stats.by_fault == {"rate_limit": 2}
        assert (stats.requests, stats.replied) == (3, 1)

        emulator.faults.script(["drip"])
        emulator.reset()

        assert emulator.conversations() == ()
        assert emulator.stats().requests == 0
        assert emulator.faults.pending == ()


class TestServed:
    async def test_async_with_serves_on_loopback(self):
        """Inside `async with`, clients talk to uvicorn on a free loopback port."""
        emulator = Emulator()

        async with emulator as served:
            assert served is emulator
            assert emulator.served
            assert emulator.base_url.startswith("http://127.0.0.1:")
            assert repr(emulator).startswith(f"<Emulator {emulator.base_url} ")
            async with emulator.client(flavor="legacy") as client:
                assert client.base_url == emulator.base_url
                reply = await client.say("Hello")
            async with emulator.http_client(base_url=emulator.base_url) as http:
                stats = (await http.get("/_emulator/stats")).json()

        assert stats["replied"] == 1
        assert emulator.user_messages(reply.conv_id) == ("Hello",)
        assert not emulator.served
        assert emulator.base_url == IN_PROCESS_URL

    async def test_any_transport_when_served(self):
        """Served, the client's transport is the caller's choice (one over a real socket)."""
        emulator = Emulator()
        async with emulator:
            transport = HttpxTransport()
            async with emulator.client(transport=transport) as client:
                assert client.transport is transport
                assert (await client.say("Hi")).text

    async def test_real_socket_errors_are_typed(self):
        """Over the socket, a documented error is still its typed exception."""
        emulator = Emulator(scenarios=[Scenario("demo", tokens="demo-token")])
        async with emulator, emulator.client(scenario_id="other") as client:
            with pytest.raises(ScenarioNotFoundError):
                await client.say("Hi")

    async def test_start_twice(self):
        """Starting a served emulator again is a RuntimeError."""
        emulator = Emulator()
        base_url = await emulator.start()
        try:
            assert base_url == emulator.base_url
            with pytest.raises(RuntimeError, match="already served"):
                await emulator.start()
        finally:
            await emulator.stop()

    async def test_stop_is_idempotent(self):
        """stop() when not served does nothing, however often."""
        emulator = Emulator()
        await emulator.stop()
        async with emulator:
            pass
        await emulator.stop()

        assert not emulator.served

    async def test_in_process_again_after_serving(self):
        """After serving, new clients are in process again."""
        emulator = Emulator()
        async with emulator:
            pass

        async with emulator.client() as client:
            assert (await client.say("Hi")).text
