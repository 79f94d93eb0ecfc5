"""AsyncQuickchat, the facade: the conversations, stored conversations and fan-outs it makes.

What it sends and how (settings, lifecycle, retries) is the sender's, in test_sender.py.
"""

from __future__ import annotations

import json

import pytest

from quickchat_async import (
    AsyncQuickchat,
    Conversation,
    FanOut,
    MemoryStore,
    StoredConversation,
    ValidationError,
)

from .conftest import API_KEY, TOKEN, FakeChat, MakeClient


pytestmark = pytest.mark.anyio


class TestConversations:
    async def test_conversation(self, client: AsyncQuickchat):
        """conversation() makes a Conversation bound to the client, with the given settings."""
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12}, max_history=3)

        assert isinstance(conv, Conversation)
        assert conv.client is client
        assert (conv.conv_id, conv.kb_topic, conv.metadata, conv.max_history) == (
            None,
            "billing",
            {"userId": 12},
            3,
        )

    async def test_continue_a_stored_conv_id(self, client: AsyncQuickchat, chat: FakeChat):
        """conversation(conv_id=...) continues a conversation the app stored."""
        chat.ords["conv-77"] = 9

        reply = await client.conversation(conv_id="conv-77").say("Back again")

        assert chat.bodies[0]["conv_id"] == "conv-77"
        assert reply.ord_number == 11

    async def test_bad_settings(self, client: AsyncQuickchat):
        """A conversation's settings are checked when it is made."""
        with pytest.raises(ValidationError, match="kb_topic"):
            client.conversation(kb_topic="")

    async def test_resume(self, client: AsyncQuickchat, chat: FakeChat):
        """resume() continues a snapshot's conversation on this client."""
        conv = client.conversation(kb_topic="billing")
        await conv.say("Hello!")

        again = client.resume(json.loads(json.dumps(conv.snapshot())))
        await again.say("And then?")

        assert again.client is client
        assert chat.bodies[-1]["conv_id"] == conv.conv_id
        assert chat.bodies[-1]["client_metadata"] == {"kb_topic": "billing"}

    @pytest.mark.parametrize("credential", [{"token": TOKEN}, {"api_key": API_KEY}])
    async def test_snapshots_hold_no_credential(self, make_client: MakeClient, credential):
        """A snapshot of either flavor never contains the token or api_key."""
        conv = make_client(**credential).conversation()
        await conv.say("Hello!")

        dumped = json.dumps(conv.snapshot())

        assert TOKEN not in dumped
        assert API_KEY not in dumped


class TestStoredConversations:
    async def test_conversation_for(self, client: AsyncQuickchat, chat: FakeChat):
        """conversation_for() loads a user's conversation from a store, and saves each turn."""
        store = MemoryStore()

        stored = await client.conversation_for("telegram:42", store=store, kb_topic="billing")
        await stored.say("Hello!")
        again = await client.conversation_for("telegram:42", store=store)

        assert isinstance(stored, StoredConversation)
        assert stored.client is client
        assert again.conv_id == stored.conv_id == "conv-1"
        assert again.kb_topic == "billing"
        assert len(store) == 1

    async def test_options_checked(self, client: AsyncQuickchat):
        """Bad options are refused before the store is touched."""
        with pytest.raises(ValidationError, match="lock_ttl"):
            await client.conversation_for("u", store=MemoryStore(), lock_ttl=0)


class TestFanOut:
    async def test_results_in_input_order(self, client: AsyncQuickchat, chat: FakeChat):
        """fan_out() returns every job's result, in input order."""
        results = await client.fan_out([["a", "b"], ["c"], "d"], concurrency=3)

        assert [result.index for result in results] == [0, 1, 2]
        assert [len(result.replies) for result in results] == [2, 1, 1]
        assert len(chat.requests) == 4

    async def test_stream(self, client: AsyncQuickchat):
        """fan_out_stream() gives a FanOut to iterate inside `async with`."""
        fan_out = client.fan_out_stream([["a"], ["b"]], concurrency=1)

        assert isinstance(fan_out, FanOut)
        async with fan_out as results:
            indexes = sorted([result.index async for result in results])

        assert indexes == [0, 1]
