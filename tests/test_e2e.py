"""End to end: the SDK, both flavors, on asyncio and trio, against the emulator served by uvicorn.

Every request here crosses a real loopback socket to uvicorn, and every assertion about what
the SDK sent is read from the emulator's record, not from a mock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quickchat_async import (
    APIConnectionError,
    AsyncQuickchat,
    AuthenticationError,
    ConversationNotFoundError,
    InternalServerError,
    RateLimitError,
    ScenarioNotFoundError,
    TurnStatus,
)
from quickchat_async.testing import Emulator


pytestmark = pytest.mark.anyio

QUESTION = "How do I return an item?"


@pytest.fixture(name="flavor", params=["current", "legacy"])
def _flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


MakeClient = Callable[..., AsyncQuickchat]


@pytest.fixture(name="make_client")
async def _make_client(served: Emulator, flavor: str) -> AsyncIterator[MakeClient]:
    """Build clients of the test's flavor pointed at the served emulator; closed afterwards."""
    made: list[AsyncQuickchat] = []

    def make(**options: Any) -> AsyncQuickchat:
        client = served.client(flavor=flavor, **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture(name="client")
def _client(make_client: MakeClient) -> AsyncQuickchat:
    return make_client()


class TestConversation:
    async def test_conv_id_is_captured(self, client: AsyncQuickchat, served: Emulator):
        """The first reply's conv_id is kept, so both turns land in one server conversation."""
        conv = client.conversation()

        first = await conv.say("Hello")
        second = await conv.say("Still there?")

        assert conv.conv_id == first.conv_id == second.conv_id
        assert (first.ord_number, second.ord_number) == (3, 5)
        assert served.user_messages(conv.conv_id) == ("Hello", "Still there?")
        assert len(served.conversations()) == 1

    async def test_kb_topic_is_sticky_and_recorded(self, client: AsyncQuickchat, served: Emulator):
        """kb_topic goes with every message, and changing it changes the answers."""
        conv = client.conversation(kb_topic="billing")

        billing = await conv.say(QUESTION)
        again = await conv.say(QUESTION)
        conv.kb_topic = "shipping"
        shipping = await conv.say(QUESTION)

        assert conv.conv_id is not None
        users = [m for m in served.messages(conv.conv_id) if m.role.value == "user"]
        topics = [(m.client_metadata or {}).get("kb_topic") for m in users]
        assert topics == ["billing", "billing", "shipping"]
        assert billing.text == again.text != shipping.text
        assert "refund" in billing.text.lower()
        assert "<br>" not in billing.text

    async def test_message_context(self, client: AsyncQuickchat, served: Emulator):
        """A turn's context is recorded as that message's message_context only."""
        conv = client.conversation()

        await conv.say("Hi", context="The user is on the checkout page")
        await conv.say("And now?")

        assert conv.conv_id is not None
        messages = served.messages(conv.conv_id)
        assert messages[1].message_context == "The user is on the checkout page"
        assert messages[3].message_context is None

    async def test_client_metadata(self, client: AsyncQuickchat, served: Emulator):
        """client_metadata arrives as sent, merged with the conversation's and its kb_topic."""
        reply = await client.say("Hi", client_metadata={"user_id": "42", "plan": "pro"})
        conv = client.conversation(kb_topic="technical", metadata={"app": "bot"})
        await conv.say("Help", metadata={"screen": "login"})

        assert served.messages(reply.conv_id)[1].client_metadata == {
            "user_id": "42",
            "plan": "pro",
        }
        assert conv.conv_id is not None
        assert served.messages(conv.conv_id)[1].client_metadata == {
            "kb_topic": "technical",
            "app": "bot",
            "screen": "login",
        }

    async def test_snapshot_and_resume(
        self, client: AsyncQuickchat, make_client: MakeClient, served: Emulator
    ):
        """A snapshot resumed by another client continues the same server conversation."""
        conv = client.conversation(kb_topic="shipping")
        await conv.say("Where is my parcel?")
        snapshot = conv.snapshot()
        await client.aclose()

        resumed = make_client().resume(snapshot)
        reply = await resumed.say("Any news?")

        assert resumed.conv_id == conv.conv_id == reply.conv_id
        assert reply.ord_number == 5
        assert len(resumed.history) == 2
        last = served.messages(reply.conv_id)[3]
        assert (last.text, last.client_metadata) == ("Any news?", {"kb_topic": "shipping"})


class TestDocumentedErrors:
    async def test_wrong_credential(self, make_client: MakeClient, flavor: str):
        """A credential the server does not know is an AuthenticationError."""
        wrong = {"token": "nope"} if flavor == "current" else {"api_key": "nope"}
        client = make_client(**wrong)

        with pytest.raises(AuthenticationError) as info:
            await client.say("Hi")
        assert info.value.status_code == (400 if flavor == "current" else 401)
        assert "nope" not in str(info.value)

    async def test_unknown_scenario(self, make_client: MakeClient, flavor: str):
        """An unknown scenario is a ScenarioNotFoundError (a 401 in the legacy flavor)."""
        client = make_client(scenario_id="missing")

        expected = ScenarioNotFoundError if flavor == "current" else AuthenticationError
        with pytest.raises(expected):
            await client.say("Hi")

    async def test_unknown_conversation(self, client: AsyncQuickchat, served: Emulator):
        """A conv_id the server does not know is a ConversationNotFoundError."""
        with pytest.raises(ConversationNotFoundError):
            await client.say("Hi", conv_id="0123456789abcdef")
        assert served.conversations() == ()


class TestFaults:
    async def test_rate_limit_is_retried(self, client: AsyncQuickchat, served: Emulator):
        """A 429 is retried (Retry-After honoured), and the turn is recorded once."""
        served.faults.script(["rate_limit"])

        reply = await client.say("Hi")

        assert served.user_messages(reply.conv_id) == ("Hi",)
        assert served.stats().by_status == {200: 1, 429: 1}

    async def test_rate_limit_without_retries(self, make_client: MakeClient, served: Emulator):
        """With retries off, a 429 is a RateLimitError carrying Retry-After."""
        served.faults.script(["rate_limit"])

        with pytest.raises(RateLimitError) as info:
            await make_client(max_retries=0).say("Hi")
        assert info.value.retry_after == 1.0

    async def test_error_after_the_turn(self, client: AsyncQuickchat, served: Emulator):
        """A 500 after the turn was recorded is not resent: no duplicate on the server."""
        conv = client.conversation()
        await conv.say("Hello")
        served.faults.script(["error_after"])

        with pytest.raises(InternalServerError):
            await conv.say("Once only")

        assert conv.conv_id is not None
        assert served.user_messages(conv.conv_id) == ("Hello", "Once only")

    async def test_dropped_connection_is_reconciled(self, client: AsyncQuickchat, served: Emulator):
        """A turn whose connection dropped is unconfirmed, then found to have landed."""
        conv = client.conversation()
        await conv.say("Hello")
        served.faults.script(["drop_after"])

        with pytest.raises(APIConnectionError) as info:
            await conv.say("Did this land?")
        assert info.value.outcome_unknown
        await conv.say("Next")

        assert [t.status for t in conv.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]
        assert conv.conv_id is not None
        assert served.user_messages(conv.conv_id) == ("Hello", "Did this land?", "Next")
