"""SyncConversation: the async conversation's behaviour, on threads, on the same session rules."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import pytest

from quickchat_async import (
    APIConnectionError,
    ConversationNotFoundError,
    Quickchat,
    SyncConversation,
    SyncHttpx2Transport,
    TurnStatus,
    UnconfirmedStartError,
    ValidationError,
)
from quickchat_async.testing import Emulator

from .conftest import SCENARIO, TOKEN


class Interrupting:
    """A transport that raises KeyboardInterrupt while `interrupt` is set, as Ctrl-C would."""

    def __init__(self, inner: SyncHttpx2Transport) -> None:
        self.inner = inner
        self.interrupt = False

    def send(self, request):
        if self.interrupt:
            raise KeyboardInterrupt
        return self.inner.send(request)

    def close(self) -> None:
        self.inner.close()


class TestConvId:
    def test_captured_from_the_first_reply(self, emulator: Emulator):
        """The first reply's conv_id is kept and sent with every later message."""
        with emulator.sync_client() as client:
            conv = client.conversation()
            assert conv.conv_id is None
            first = conv.say("Hello")
            second = conv.say("Again")
        assert conv.conv_id == first.conv_id == second.conv_id
        assert emulator.user_messages(first.conv_id) == ("Hello", "Again")
        assert (first.ord_number, second.ord_number) == (3, 5)

    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    def test_a_stored_conv_id_continues(self, emulator: Emulator, flavor):
        """conversation(conv_id=...) continues a conversation, in either flavor."""
        with emulator.sync_client(flavor=flavor) as client:
            conv_id = client.conversation().say("Hello").conv_id
            later = client.conversation(conv_id=conv_id)
            reply = later.say("Me again")
        assert reply.conv_id == conv_id
        assert emulator.user_messages(conv_id) == ("Hello", "Me again")

    def test_unknown_conv_id_leaves_the_state(self, emulator: Emulator):
        """A conv_id the server does not know raises, and the conversation is unchanged."""
        with emulator.sync_client() as client:
            conv = client.conversation(conv_id="nope")
            with pytest.raises(ConversationNotFoundError):
                conv.say("Hello")
        assert conv.conv_id == "nope"
        assert conv.history == ()


class TestKbTopic:
    def test_sent_on_every_request(self, emulator: Emulator):
        """kb_topic goes out with every message, the first included, with the turn's metadata."""
        with emulator.sync_client() as client:
            conv = client.conversation(kb_topic="billing", metadata={"userId": 12})
            conv.say("Refunds?", metadata={"page": "checkout"}, context="John, checkout page")
            conv.kb_topic = "shipping"
            conv.say("And returns?")
        sent = emulator.messages(conv.conv_id or "")
        assert sent[1].client_metadata == {"userId": 12, "page": "checkout", "kb_topic": "billing"}
        assert sent[1].message_context == "John, checkout page"
        assert sent[3].client_metadata == {"userId": 12, "kb_topic": "shipping"}
        assert [turn.kb_topic for turn in conv.history] == ["billing", "shipping"]

    def test_sticky_once_started(self, emulator: Emulator):
        """A started conversation can neither gain nor lose its topic."""
        with emulator.sync_client() as client:
            plain = client.conversation()
            plain.say("Hello")
            with pytest.raises(ValidationError, match="cannot be introduced"):
                plain.kb_topic = "billing"
            topical = client.conversation(kb_topic="billing")
            topical.say("Hello")
            with pytest.raises(ValidationError, match="cannot be removed"):
                topical.kb_topic = None

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"text": "  "}, "must not be empty"),
            ({"text": "x", "context": "c" * 1001}, "1000"),
            ({"text": "x", "metadata": {"kb_topic": "x"}}, "kb_topic="),
            ({"text": "x", "metadata": {str(n): n for n in range(5)}}, "at most 5"),
        ],
    )
    def test_bad_input_sends_nothing(self, emulator: Emulator, kwargs, match):
        """The turn's input is checked before anything goes out (5 keys counting kb_topic)."""
        with emulator.sync_client() as client:
            conv = client.conversation(kb_topic="billing")
            with pytest.raises(ValidationError, match=match):
                conv.say(**kwargs)
        assert emulator.stats().requests == 0
        assert conv.history == ()


class TestHistory:
    def test_turns_are_recorded_and_bounded(self, emulator: Emulator):
        """history holds the turns, oldest first, and only the last max_history of them."""
        with emulator.sync_client() as client:
            conv = client.conversation(max_history=2)
            for text in ("one", "two", "three"):
                conv.say(text)
        assert [turn.text for turn in conv.history] == ["two", "three"]
        assert all(turn.status is TurnStatus.CONFIRMED for turn in conv.history)
        assert repr(conv) == f"<SyncConversation conv_id={conv.conv_id!r} turns=2>"

    def test_a_turn_that_may_have_landed_is_settled_by_the_next_reply(self, emulator: Emulator):
        """A dropped reply leaves an UNCONFIRMED turn; the next reply's ord_number settles it."""
        with emulator.sync_client() as client:
            conv = client.conversation()
            conv.say("Hello")
            emulator.faults.script(["drop_after"])
            with pytest.raises(APIConnectionError) as info:
                conv.say("Please cancel my order.")
            assert info.value.outcome_unknown
            assert conv.history[-1].status is TurnStatus.UNCONFIRMED
            assert conv.unconfirmed == (conv.history[-1],)
            conv.say("Did you get that?")
        assert conv.history[1].status is TurnStatus.LANDED
        assert conv.unconfirmed == ()

    def test_an_unconfirmed_first_message_blocks_a_second_conversation(self, emulator: Emulator):
        """After a first message with an unknown outcome, say() refuses until start_over()."""
        with emulator.sync_client() as client:
            conv = client.conversation()
            emulator.faults.script(["drop_after"])
            with pytest.raises(APIConnectionError):
                conv.say("Hello")
            with pytest.raises(UnconfirmedStartError):
                conv.say("Hello?")
            conv.start_over()
            reply = conv.say("Hello, again")
        assert len(emulator.conversations()) == 2
        assert reply.conv_id == conv.conv_id

    def test_an_interrupted_turn_leaves_no_turn(self, emulator: Emulator):
        """A turn interrupted by a non-SDK exception (Ctrl-C) is abandoned: no turn is added."""
        transport = Interrupting(
            SyncHttpx2Transport(emulator.sync_http_client(), close_client=True)
        )
        options = {"scenario_id": SCENARIO.scenario_id, "base_url": emulator.base_url}
        with Quickchat(token=TOKEN, transport=transport, **options) as client:
            conv = client.conversation()
            conv.say("Hello")
            transport.interrupt = True
            with pytest.raises(KeyboardInterrupt):
                conv.say("Are you there?")
            transport.interrupt = False
            conv.say("Hello again")
        assert [turn.text for turn in conv.history] == ["Hello", "Hello again"]
        assert conv.unconfirmed == ()


class TestThreads:
    def test_twenty_first_messages_open_one_server_conversation(self, emulator: Emulator):
        """Twenty threads sending the first message of one conversation: one server conversation."""
        start = threading.Barrier(20)
        replies = []
        errors = []
        with emulator.sync_client() as client:
            conv = client.conversation(kb_topic="billing")

            def first_message(n: int) -> None:
                start.wait(timeout=10)
                try:
                    replies.append(conv.say(f"hello from thread {n}"))
                except Exception as exc:  # noqa: BLE001 -- reported below
                    errors.append(exc)

            threads = [threading.Thread(target=first_message, args=(n,)) for n in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        assert errors == []
        assert len(emulator.conversations()) == 1
        assert {reply.conv_id for reply in replies} == {conv.conv_id}
        assert sorted(emulator.user_messages(conv.conv_id or "")) == sorted(
            f"hello from thread {n}" for n in range(20)
        )
        assert len(conv.history) == 20

    def test_a_failed_turn_releases_the_lock(self, emulator: Emulator):
        """A turn that raises lets the next one through."""
        with emulator.sync_client(max_retries=0) as client:
            conv = client.conversation()
            conv.say("Hello")
            emulator.faults.script(["rate_limit"])
            with pytest.raises(Exception, match="rate-limiting"):
                conv.say("Too fast")
            assert conv.say("Slower").conv_id == conv.conv_id


class TestSnapshots:
    def test_round_trip_through_json(self, emulator: Emulator):
        """snapshot() is JSON; resume() goes on with the same conv_id, topic and history."""
        with emulator.sync_client() as client:
            conv = client.conversation(kb_topic="technical", metadata={"userId": 12})
            conv.say("I cannot sign in.")
            restored = client.resume(json.loads(json.dumps(conv.snapshot())))
            restored.say("It says my password is wrong.")
        assert isinstance(restored, SyncConversation)
        assert restored.conv_id == conv.conv_id
        assert restored.kb_topic == "technical"
        assert restored.metadata == {"userId": 12}
        assert [turn.text for turn in restored.history] == [
            "I cannot sign in.",
            "It says my password is wrong.",
        ]

    def test_snapshots_move_between_the_blocking_and_the_async_client(self, emulator: Emulator):
        """A snapshot taken by either client is resumed by the other, unconfirmed turns and all."""
        with emulator.sync_client() as client:
            conv = client.conversation(kb_topic="billing")
            conv.say("Hello")
            emulator.faults.script(["drop_after"])
            with pytest.raises(APIConnectionError):
                conv.say("Cancel my order")
            blocking_snapshot = conv.snapshot()

        async def on_the_async_client() -> dict[str, Any]:
            async with emulator.client() as async_client:
                resumed = async_client.resume(blocking_snapshot)
                assert resumed.snapshot() == blocking_snapshot
                await resumed.say("Did it work?")
                assert resumed.history[1].status is TurnStatus.LANDED
                return resumed.snapshot()

        async_snapshot = anyio.run(on_the_async_client)
        with emulator.sync_client(flavor="legacy") as client:
            back = client.resume(async_snapshot)
            assert back.snapshot() == async_snapshot
            back.say("Thanks")
        assert back.kb_topic == "billing"
        assert [turn.status for turn in back.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
            TurnStatus.CONFIRMED,
        ]
        assert len(emulator.conversations()) == 1
        assert emulator.user_messages(back.conv_id or "") == (
            "Hello",
            "Cancel my order",
            "Did it work?",
            "Thanks",
        )

    def test_bad_snapshot_is_refused(self, emulator: Emulator):
        """resume() refuses anything that is not a snapshot this SDK wrote."""
        with emulator.sync_client() as client, pytest.raises(ValidationError, match="snapshot"):
            client.resume({"kind": "something else"})
