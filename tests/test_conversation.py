"""Conversation: the session's rules on the wire, one turn at a time, whatever cancels it.

The rules themselves (kb_topic, metadata, history, settling unconfirmed turns, snapshots) are
tested without I/O in test_session.py; here, what a conversation sends and keeps when it talks
to the fake Chat endpoint.
"""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest

from quickchat_async import (
    APIConnectionError,
    AsyncQuickchat,
    BadRequestError,
    Conversation,
    TurnStatus,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
)

from .conftest import (
    API_KEY,
    FakeChat,
    Landed,
    MakeClient,
    chat_reply,
    error_response,
)


pytestmark = pytest.mark.anyio


class TestConvId:
    async def test_captured_from_the_first_reply(self, client: AsyncQuickchat, chat: FakeChat):
        """The first reply's conv_id is kept and sent on every later turn."""
        conv = client.conversation()
        assert conv.conv_id is None

        first = await conv.say("Hello!")
        second = await conv.say("What is your return policy?")

        assert first.conv_id == second.conv_id == conv.conv_id == "conv-1"
        assert "conv_id" not in chat.bodies[0]
        assert chat.bodies[1]["conv_id"] == "conv-1"
        assert [first.ord_number, second.ord_number] == [3, 5]

    async def test_legacy_reply_without_conv_id(self, make_client: MakeClient):
        """A legacy continuation answered without conv_id keeps the conversation's."""
        fake = FakeChat(omit_conv_id=True)
        conv = make_client(fake, api_key=API_KEY).conversation()

        await conv.say("Hello!")
        reply = await conv.say("Hello again!")

        assert reply.conv_id == conv.conv_id == "conv-1"
        assert fake.bodies[1]["conv_id"] == "conv-1"
        assert fake.bodies[1]["api_key"] == API_KEY

    async def test_unknown_conv_id_leaves_state(self, client: AsyncQuickchat, chat: FakeChat):
        """A ConversationNotFoundError leaves conv_id and history untouched."""
        conv = client.conversation(conv_id="gone")

        with pytest.raises(BadRequestError, match="does not know this conversation"):
            await conv.say("Hello?")

        assert conv.conv_id == "gone"
        assert conv.history == ()


class TestWhatIsSent:
    async def test_kb_topic_on_every_request(self, client: AsyncQuickchat, chat: FakeChat):
        """kb_topic goes into client_metadata on every turn, the first included."""
        conv = client.conversation(kb_topic="billing")

        await conv.say("Hello!")
        await conv.say("Refunds?")

        assert [b["client_metadata"] for b in chat.bodies] == [{"kb_topic": "billing"}] * 2

    async def test_kb_topic_changed(self, client: AsyncQuickchat, chat: FakeChat):
        """A new topic goes out from the next turn, and each turn records its own."""
        conv = client.conversation(kb_topic="billing")
        await conv.say("Hello!")

        conv.kb_topic = "shipping"
        await conv.say("Where is my parcel?")

        assert chat.bodies[1]["client_metadata"] == {"kb_topic": "shipping"}
        assert [t.kb_topic for t in conv.history] == ["billing", "shipping"]

    async def test_kb_topic_rules(self, client: AsyncQuickchat, chat: FakeChat):
        """A started conversation cannot gain or lose its topic (the session's rule)."""
        conv = client.conversation()
        await conv.say("Hello!")

        with pytest.raises(ValidationError, match="introduced"):
            conv.kb_topic = "billing"

        assert conv.kb_topic is None

    async def test_kb_topic_fixed_while_the_first_turn_is_in_flight(self, make_client):
        """While the first turn is in flight the conversation counts as started."""
        conv = make_client(FakeChat(delay=0.2)).conversation()

        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.say, "Hello!")
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ValidationError):
                conv.kb_topic = "billing"

        assert conv.kb_topic is None

    async def test_metadata_merged_per_turn(self, client: AsyncQuickchat, chat: FakeChat):
        """client_metadata = conversation metadata, the turn's over it, plus kb_topic."""
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12, "plan": "free"})

        await conv.say("Hello!", metadata={"plan": "pro", "page": "/pricing"})
        await conv.say("And then?")

        assert chat.bodies[0]["client_metadata"] == {
            "userId": 12,
            "plan": "pro",
            "page": "/pricing",
            "kb_topic": "billing",
        }
        assert chat.bodies[1]["client_metadata"] == {
            "userId": 12,
            "plan": "free",
            "kb_topic": "billing",
        }

    async def test_context_for_one_turn(self, client: AsyncQuickchat, chat: FakeChat):
        """context= goes out as message_context for that turn only."""
        conv = client.conversation()

        await conv.say("Hello!", context="The user's name is John.")
        await conv.say("Again")

        assert chat.bodies[0]["message_context"] == "The user's name is John."
        assert "message_context" not in chat.bodies[1]
        assert conv.history[0].context == "The user's name is John."

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"context": "x" * 1001}, "1000"),
            ({"metadata": {"kb_topic": "billing"}}, r"kb_topic=\.\.\."),
            ({"metadata": {str(i): i for i in range(5)}}, "at most 5, kb_topic included"),
            ({"metadata": "page=/"}, "mapping"),
        ],
    )
    async def test_bad_turns_never_sent(self, client: AsyncQuickchat, chat, options, match):
        """A turn the rules refuse is not sent, and the conversation is unchanged."""
        conv = client.conversation(kb_topic="t")

        with pytest.raises(ValidationError, match=match):
            await conv.say("hi", **options)

        assert chat.requests == []
        assert conv.history == ()
        await conv.say("hi")  # and it goes on

    async def test_metadata_changed_after_it_was_checked(self, client, chat: FakeChat):
        """Conversation metadata mutated into something not JSON is refused when sent."""
        tags: list[object] = ["a"]
        conversation = client.conversation(metadata={"tags": tags})
        tags.append(object())

        with pytest.raises(ValidationError, match="cannot be sent as JSON"):
            await conversation.say("Hello!")

        assert chat.requests == []
        assert conversation.history == ()


class TestHistory:
    async def test_turns_recorded(self, client: AsyncQuickchat, chat: FakeChat):
        """Each confirmed turn records what was sent and the reply that came back."""
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12})

        reply = await conv.say("Hello!", context="ctx", metadata={"page": "/"})

        (turn,) = conv.history
        assert (turn.text, turn.context, turn.reply) == ("Hello!", "ctx", reply)
        assert turn.metadata == chat.bodies[0]["client_metadata"]
        assert turn.status is TurnStatus.CONFIRMED

    async def test_max_history(self, make_client: MakeClient, chat: FakeChat):
        """max_history keeps only the last N turns; the conversation goes on."""
        conv = make_client().conversation(max_history=2)

        for text in ("one", "two", "three"):
            await conv.say(text)

        assert [t.text for t in conv.history] == ["two", "three"]
        assert chat.bodies[2]["conv_id"] == "conv-1"

    async def test_a_refused_turn_leaves_state(self, client: AsyncQuickchat, chat: FakeChat):
        """A turn the server refused adds nothing; the conversation stays usable."""
        conv = client.conversation()
        await conv.say("one")
        chat.script(error_response(400, "Missing required parameter: text"))

        with pytest.raises(BadRequestError):
            await conv.say("two")
        assert [t.text for t in conv.history] == ["one"]

        await conv.say("three")
        assert [t.text for t in conv.history] == ["one", "three"]

    async def test_a_connection_that_never_opened(self, client: AsyncQuickchat, chat: FakeChat):
        """A turn that cannot have reached the server surfaces typed and leaves no trace."""
        chat.script(*[httpx2.ConnectError("refused")] * 3)
        conv = client.conversation()

        with pytest.raises(APIConnectionError) as info:
            await conv.say("Hello!")

        assert not info.value.outcome_unknown
        assert (conv.conv_id, conv.history, conv.unconfirmed) == (None, (), ())

    async def test_a_failed_first_turn_adopts_nothing(self, client, chat: FakeChat):
        """A first turn answered with a bad body does not adopt its conv_id."""
        chat.script(httpx2.Response(200, json={"conv_id": "c-9"}))
        conv = client.conversation()

        with pytest.raises(UnexpectedResponseError, match="no 'reply'"):
            await conv.say("one")
        assert conv.conv_id is None
        conv.start_over()

        await conv.say("two")
        assert conv.conv_id == "conv-1"

    async def test_repr(self, client: AsyncQuickchat, chat: FakeChat):
        """The repr shows conv_id, topic and turn count, nothing else."""
        conv = client.conversation(kb_topic="billing", metadata={"email": "a@b.c"})
        await conv.say("Hello!")

        assert repr(conv) == "<Conversation conv_id='conv-1' kb_topic='billing' turns=1>"
        assert repr(client.conversation()) == "<Conversation conv_id=None turns=0>"

    async def test_a_conversation_of_ones_own(self, client: AsyncQuickchat, chat: FakeChat):
        """Conversation(client) is the same as client.conversation()."""
        conv = Conversation(client, kb_topic="billing")

        await conv.say("Hello!")

        assert conv.client is client
        assert chat.bodies[0]["client_metadata"] == {"kb_topic": "billing"}


class TestCancellation:
    async def test_a_cancelled_turn_leaves_no_trace(self, make_client: MakeClient):
        """A turn cancelled mid-request adds nothing, and the next turn does not wait."""
        fake = FakeChat()
        started = anyio.Event()

        async def hang_once(request: httpx2.Request) -> httpx2.Response:
            if len(fake.requests) == 1 and not started.is_set():
                started.set()
                await anyio.sleep_forever()
            return await fake(request)

        conv = make_client(hang_once).conversation()
        await conv.say("one")

        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conv.say, "two")
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught

        assert [t.text for t in conv.history] == ["one"]
        assert conv.unconfirmed == ()
        with anyio.fail_after(1):  # the turn lock was released
            await conv.say("three")
        assert [t.text for t in conv.history] == ["one", "three"]

    async def test_a_cancelled_waiting_turn(self, make_client: MakeClient):
        """A turn cancelled while queued behind another is never sent; the queue goes on."""
        fake = FakeChat()
        release = anyio.Event()

        async def first_waits(request: httpx2.Request) -> httpx2.Response:
            if not fake.requests:
                await release.wait()
            return await fake(request)

        conv = make_client(first_waits).conversation()
        scope = anyio.CancelScope()

        async def queued() -> None:
            with scope:
                await conv.say("queued")

        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.say, "first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(queued)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(conv.say, "last")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            release.set()

        assert [b["text"] for b in fake.bodies] == ["first", "last"]
        assert [t.text for t in conv.history] == ["first", "last"]


class TestConcurrency:
    async def test_concurrent_first_turns_share_one_conversation(self, make_client):
        """Concurrent first say() calls are serialised: one server conversation."""
        fake = FakeChat(delay=0.05)
        conv = make_client(fake).conversation()
        replies = {}

        async def say(text: str) -> None:
            replies[text] = await conv.say(text)

        async with anyio.create_task_group() as tg:
            for text in ("a", "b", "c"):
                tg.start_soon(say, text)

        assert {r.conv_id for r in replies.values()} == {"conv-1"}
        assert "conv_id" not in fake.bodies[0]
        assert [b["conv_id"] for b in fake.bodies[1:]] == ["conv-1", "conv-1"]
        assert sorted(r.ord_number for r in replies.values()) == [3, 5, 7]

    async def test_turns_keep_call_order(self, make_client: MakeClient):
        """Queued turns go out in the order say() was called."""
        fake = FakeChat(delay=0.02)
        conv = make_client(fake).conversation()

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(conv.say, f"msg {i}")
                await anyio.wait_all_tasks_blocked()

        assert [b["text"] for b in fake.bodies] == [f"msg {i}" for i in range(5)]
        assert [t.text for t in conv.history] == [f"msg {i}" for i in range(5)]

    async def test_different_conversations_run_concurrently(self, make_client: MakeClient):
        """Separate conversations are not serialised with each other."""
        client = make_client(FakeChat(delay=0.3))
        conversations = [client.conversation() for _ in range(10)]

        with anyio.fail_after(2.5):  # serialised, this would take 3 s
            async with anyio.create_task_group() as tg:
                for conv in conversations:
                    tg.start_soon(conv.say, "hi")

        assert len({c.conv_id for c in conversations}) == 10

    async def test_a_failure_lets_the_next_turn_go(self, client: AsyncQuickchat, chat: FakeChat):
        """A failing turn lets the queued one proceed."""
        chat.script(error_response(400, "nope"), chat_reply(conv_id="conv-2"))
        conv = client.conversation()
        errors = []

        async def say(text: str) -> None:
            try:
                await conv.say(text)
            except BadRequestError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(say, "first")
            tg.start_soon(say, "second")

        assert len(errors) == 1
        assert conv.conv_id == "conv-2"


class TestUnconfirmedTurns:
    @pytest.mark.parametrize(
        ("failure", "status"),
        [
            (httpx2.ReadTimeout("no reply"), TurnStatus.NOT_LANDED),
            (Landed(httpx2.RemoteProtocolError("Server disconnected.")), TurnStatus.LANDED),
            (Landed(error_response(500, "Internal Server Error")), TurnStatus.LANDED),
        ],
        ids=["lost", "dropped-after", "500-after"],
    )
    async def test_the_next_reply_settles_it(self, client, chat: FakeChat, failure, status):
        """An ambiguous turn is kept as unconfirmed, then the next ord_number settles it."""
        conv = client.conversation()
        await conv.say("one")
        chat.script(failure)

        with pytest.raises(Exception, match="may or may not have recorded") as info:
            await conv.say("two")

        assert info.value.outcome_unknown
        (pending,) = conv.unconfirmed
        assert (pending.text, pending.status, pending.reply) == (
            "two",
            TurnStatus.UNCONFIRMED,
            None,
        )
        assert type(info.value).__name__ in (pending.error or "")

        await conv.say("three")

        assert conv.unconfirmed == ()
        assert [(t.text, t.status) for t in conv.history] == [
            ("one", TurnStatus.CONFIRMED),
            ("two", status),
            ("three", TurnStatus.CONFIRMED),
        ]

    async def test_unconfirmed_first_turn_blocks_a_second_conversation(self, client, chat):
        """After an ambiguous first turn, say() refuses to open a second conversation."""
        chat.script(Landed(httpx2.RemoteProtocolError("Server disconnected.")))
        conv = client.conversation()
        with pytest.raises(APIConnectionError, match="may or may not"):
            await conv.say("Hello?")

        with pytest.raises(UnconfirmedStartError, match="start_over"):
            await conv.say("Hello again?")
        assert len(chat.requests) == 1

        conv.start_over()
        reply = await conv.say("Hello again?")

        assert reply.conv_id == "conv-2"
        assert [t.status for t in conv.history] == [TurnStatus.UNCONFIRMED, TurnStatus.CONFIRMED]

    async def test_a_cancelled_turn_is_not_kept(self, make_client: MakeClient):
        """Cancellation leaves no unconfirmed turn behind (the caller chose to stop)."""
        started = anyio.Event()

        async def hang(request: httpx2.Request) -> httpx2.Response:
            started.set()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

        conv = make_client(hang).conversation(conv_id="c-1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.say, "hi")
            await started.wait()
            tg.cancel_scope.cancel()

        assert conv.history == ()
        assert conv.unconfirmed == ()

    async def test_survives_snapshot_and_resume(self, client: AsyncQuickchat, chat: FakeChat):
        """Pending turns round-trip through a snapshot, and settle after resume."""
        conv = client.conversation()
        await conv.say("one")
        chat.script(Landed(httpx2.RemoteProtocolError("Server disconnected.")))
        with pytest.raises(APIConnectionError):
            await conv.say("two")

        again = client.resume(json.loads(json.dumps(conv.snapshot())))
        assert [t.text for t in again.unconfirmed] == ["two"]
        await again.say("three")

        assert [t.status for t in again.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]
