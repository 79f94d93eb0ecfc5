"""Conversation: conv_id capture, sticky kb_topic, metadata, history, concurrency, snapshots."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import anyio
import httpx
import pytest
import respx

from quickchat_async import (
    APIConnectionError,
    AsyncQuickchat,
    BadRequestError,
    Conversation,
    Turn,
    TurnStatus,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
)

from .conftest import API_KEY, TOKEN, chat_reply, sent_json


pytestmark = pytest.mark.anyio


class FakeChat:
    """A respx side effect that behaves like the Chat endpoint for conv_id and ord_number."""

    def __init__(self, *, legacy_omits_conv_id: bool = False, delay: float = 0.0) -> None:
        self.ids = (f"conv-{n}" for n in itertools.count(1))
        self.ords: dict[str, int] = {}
        self.legacy_omits_conv_id = legacy_omits_conv_id
        self.delay = delay
        self.bodies: list[dict[str, object]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = sent_json(request)
        self.bodies.append(body)
        if self.delay:
            await anyio.sleep(self.delay)
        conv_id = body.get("conv_id")
        continuing = isinstance(conv_id, str)
        if not continuing:
            conv_id = next(self.ids)
            self.ords[conv_id] = 1
        self.ords[conv_id] += 2
        answer = {"reply": f"You said: {body['text']}", "ord_number": self.ords[conv_id]}
        if not (continuing and self.legacy_omits_conv_id):
            answer["conv_id"] = conv_id
        return httpx.Response(200, json=answer)


@pytest.fixture(name="chat")
def _chat(router: respx.Router) -> FakeChat:
    """The fake endpoint, mounted on the current flavor's router."""
    fake = FakeChat()
    router.post("/chat").mock(side_effect=fake)
    return fake


class TestConvId:
    async def test_captured_from_first_reply(self, client: AsyncQuickchat, chat: FakeChat):
        """The first reply's conv_id is kept and sent on every later turn."""
        conv = client.conversation()
        assert conv.conv_id is None

        first = await conv.say("Hello!")
        second = await conv.say("What is your return policy?")

        assert first.conv_id == second.conv_id == conv.conv_id == "conv-1"
        assert "conv_id" not in chat.bodies[0]
        assert chat.bodies[1]["conv_id"] == "conv-1"
        assert [first.ord_number, second.ord_number] == [3, 5]

    async def test_continue_stored_conv_id(self, client, chat):
        """A conversation built from a stored conv_id continues it from the first turn."""
        conv = client.conversation(conv_id="conv-77")
        chat.ords["conv-77"] = 9

        reply = await conv.say("Back again")

        assert chat.bodies[0]["conv_id"] == "conv-77"
        assert reply.ord_number == 11

    async def test_legacy_reply_without_conv_id_keeps_it(self, legacy_router, make_client):
        """A legacy continuation that answers without conv_id keeps the conversation's."""
        fake = FakeChat(legacy_omits_conv_id=True)
        legacy_router.post("/chat").mock(side_effect=fake)
        conv = make_client(legacy_router, api_key=API_KEY).conversation()

        await conv.say("Hello!")
        reply = await conv.say("Hello again!")

        assert reply.conv_id == conv.conv_id == "conv-1"
        assert fake.bodies[1]["conv_id"] == "conv-1"
        assert fake.bodies[1]["api_key"] == API_KEY

    async def test_unknown_conv_id_leaves_state(self, client, router):
        """A ConversationNotFoundError leaves conv_id and history untouched."""
        router.post("/chat").mock(
            return_value=httpx.Response(400, text="Conversation conv_id gone is not valid.")
        )
        conv = client.conversation(conv_id="gone")

        with pytest.raises(BadRequestError):
            await conv.say("Hello?")

        assert conv.conv_id == "gone"
        assert conv.history == ()


class TestKbTopic:
    async def test_sent_on_every_request_first_included(self, client, chat):
        """kb_topic goes into client_metadata on every turn, including the first."""
        conv = client.conversation(kb_topic="billing")

        await conv.say("Hello!")
        await conv.say("Refunds?")

        assert [b["client_metadata"] for b in chat.bodies] == [{"kb_topic": "billing"}] * 2

    async def test_value_may_change(self, client, chat):
        """The topic's value can change between turns."""
        conv = client.conversation(kb_topic="billing")
        await conv.say("Hello!")

        conv.kb_topic = "shipping"
        await conv.say("Where is my parcel?")

        assert chat.bodies[1]["client_metadata"] == {"kb_topic": "shipping"}
        assert [t.kb_topic for t in conv.history] == ["billing", "shipping"]

    async def test_cannot_be_removed_once_started(self, client, chat):
        """Removing kb_topic mid-conversation would silently disable the filter: refused."""
        conv = client.conversation(kb_topic="billing")
        await conv.say("Hello!")

        with pytest.raises(ValidationError, match="cannot be removed"):
            conv.kb_topic = None

        assert conv.kb_topic == "billing"

    async def test_cannot_be_introduced_after_start(self, client, chat):
        """Introducing kb_topic after the first turn is refused, naming the rule."""
        conv = client.conversation()
        await conv.say("Hello!")

        with pytest.raises(ValidationError, match="every request, the first included"):
            conv.kb_topic = "billing"

    async def test_cannot_be_introduced_on_stored_conv_id(self, client):
        """A conversation continued from a conv_id counts as started."""
        conv = client.conversation(conv_id="conv-5")

        with pytest.raises(ValidationError, match="introduced"):
            conv.kb_topic = "billing"

    async def test_set_before_first_turn(self, client, chat):
        """Before the first turn the topic may be set or cleared freely."""
        conv = client.conversation()
        conv.kb_topic = "billing"
        conv.kb_topic = None
        conv.kb_topic = "shipping"

        await conv.say("Hello!")

        assert chat.bodies[0]["client_metadata"] == {"kb_topic": "shipping"}

    async def test_not_changeable_while_first_turn_in_flight(self, router, make_client):
        """While the first turn is in flight the conversation counts as started."""
        router.post("/chat").mock(side_effect=FakeChat(delay=0.2))
        conv = make_client(router).conversation()

        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.say, "Hello!")
            await anyio.sleep(0.05)
            with pytest.raises(ValidationError):
                conv.kb_topic = "billing"

    @pytest.mark.parametrize("topic", ["", 5])
    async def test_bad_topic(self, client, topic):
        """A topic is a non-empty string."""
        with pytest.raises(ValidationError, match="kb_topic"):
            client.conversation(kb_topic=topic)

    async def test_not_allowed_inside_metadata(self, client, chat):
        """kb_topic inside metadata is refused with a pointer to kb_topic=."""
        with pytest.raises(ValidationError, match=r"kb_topic=\.\.\."):
            client.conversation(metadata={"kb_topic": "billing"})
        conv = client.conversation()

        with pytest.raises(ValidationError, match=r"kb_topic=\.\.\."):
            await conv.say("hi", metadata={"kb_topic": "billing"})

        assert chat.bodies == []


class TestMetadataAndContext:
    async def test_conversation_metadata_merged_with_turn(self, client, chat):
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
        assert conv.metadata == {"userId": 12, "plan": "free"}

    async def test_metadata_is_read_only_and_copied(self, client, chat):
        """The conversation keeps its own copy; its metadata view cannot be mutated."""
        original = {"userId": 12}
        conv = client.conversation(metadata=original)
        original["userId"] = 13

        with pytest.raises(TypeError):
            conv.metadata["userId"] = 14  # type: ignore[index]
        await conv.say("hi")

        assert chat.bodies[0]["client_metadata"] == {"userId": 12}

    async def test_five_keys_with_kb_topic(self, client, chat):
        """Five keys including kb_topic are fine; a sixth from the turn is refused unsent."""
        conv = client.conversation(kb_topic="t", metadata={"a": 1, "b": 2, "c": 3, "d": 4})
        await conv.say("hi")

        with pytest.raises(ValidationError, match="at most 5, kb_topic included"):
            await conv.say("hi", metadata={"e": 5})

        assert len(chat.bodies) == 1
        assert len(conv.history) == 1

    async def test_six_keys_refused_at_creation(self, client):
        """A conversation whose metadata plus kb_topic exceeds 5 keys is refused up front."""
        with pytest.raises(ValidationError, match="at most 5"):
            client.conversation(kb_topic="t", metadata={str(i): i for i in range(5)})

    async def test_setting_topic_counts_keys(self, client):
        """Setting a topic that would make a sixth key is refused."""
        conv = client.conversation(metadata={str(i): i for i in range(5)})

        with pytest.raises(ValidationError, match="at most 5"):
            conv.kb_topic = "t"

    async def test_context_sent_as_message_context(self, client, chat):
        """context= goes out as message_context for that turn only."""
        conv = client.conversation()

        await conv.say("Hello!", context="The user's name is John.")
        await conv.say("Again")

        assert chat.bodies[0]["message_context"] == "The user's name is John."
        assert "message_context" not in chat.bodies[1]
        assert conv.history[0].context == "The user's name is John."

    async def test_context_too_long(self, client, chat):
        """A context over 1000 characters is refused before sending."""
        conv = client.conversation()

        with pytest.raises(ValidationError, match="1000"):
            await conv.say("hi", context="x" * 1001)

        assert chat.bodies == []

    @pytest.mark.parametrize("max_history", [-1, 1.0, "3"])
    async def test_bad_max_history(self, client, max_history):
        """max_history is a non-negative integer or None."""
        with pytest.raises(ValidationError, match="max_history"):
            client.conversation(max_history=max_history)


class TestHistory:
    async def test_turns_recorded(self, client, chat):
        """Each confirmed turn records what was sent, the reply and UTC times."""
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12})
        before = dt.datetime.now(dt.UTC)

        reply = await conv.say("Hello!", context="ctx", metadata={"page": "/"})

        (turn,) = conv.history
        assert isinstance(turn, Turn)
        assert turn.text == "Hello!"
        assert turn.context == "ctx"
        assert turn.metadata == {"userId": 12, "page": "/", "kb_topic": "billing"}
        assert turn.reply is reply
        assert before <= turn.sent_at <= turn.received_at <= dt.datetime.now(dt.UTC)
        assert turn.sent_at.tzinfo is dt.UTC

    async def test_history_is_a_tuple_snapshot(self, client, chat):
        """history is an immutable tuple, oldest first."""
        conv = client.conversation()
        await conv.say("one")
        view = conv.history
        await conv.say("two")

        assert [t.text for t in view] == ["one"]
        assert [t.text for t in conv.history] == ["one", "two"]

    async def test_max_history_bounds_memory(self, client, chat):
        """max_history keeps only the last N turns."""
        conv = client.conversation(max_history=2)

        for text in ("one", "two", "three"):
            await conv.say(text)

        assert [t.text for t in conv.history] == ["two", "three"]
        assert conv.conv_id == "conv-1"

    async def test_max_history_zero(self, client, chat):
        """max_history=0 keeps no turns but still continues the conversation."""
        conv = client.conversation(max_history=0)

        await conv.say("one")
        await conv.say("two")

        assert conv.history == ()
        assert chat.bodies[1]["conv_id"] == "conv-1"

    async def test_failed_turn_leaves_state(self, client, router):
        """A turn the server refused adds nothing; the conversation stays usable."""
        router.post("/chat").mock(
            side_effect=[
                chat_reply(ord_number=3),
                httpx.Response(400, text="Missing required parameter: text"),
                chat_reply(ord_number=5),
            ]
        )
        conv = client.conversation()
        await conv.say("one")

        with pytest.raises(BadRequestError):
            await conv.say("two")
        assert [t.text for t in conv.history] == ["one"]

        await conv.say("three")
        assert [t.text for t in conv.history] == ["one", "three"]

    async def test_failed_first_turn_adopts_nothing(self, client, router):
        """A first turn answered with a bad body does not adopt its conv_id."""
        router.post("/chat").mock(
            side_effect=[httpx.Response(200, json={"conv_id": "c-9"}), chat_reply()]
        )
        conv = client.conversation()

        with pytest.raises(UnexpectedResponseError, match="no 'reply'"):
            await conv.say("one")
        assert conv.conv_id is None
        conv.start_over()

        await conv.say("two")
        assert conv.conv_id == "conv-1"

    async def test_cancelled_turn_leaves_state(self, router, make_client):
        """A turn cancelled mid-request leaves no trace; the lock is released."""
        fake = FakeChat()
        started = anyio.Event()

        async def hang_once(request: httpx.Request) -> httpx.Response:
            if len(fake.bodies) == 1 and not started.is_set():
                started.set()
                await anyio.sleep_forever()
            return await fake(request)

        router.post("/chat").mock(side_effect=hang_once)
        conv = make_client(router).conversation()
        await conv.say("one")

        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conv.say, "two")
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught

        assert [t.text for t in conv.history] == ["one"]
        assert conv._lock is not None
        assert conv._lock.in_use == 0
        await conv.say("three")
        assert [t.text for t in conv.history] == ["one", "three"]

    async def test_repr(self, client, chat):
        """The repr shows conv_id, topic and turn count, nothing else."""
        conv = client.conversation(kb_topic="billing", metadata={"email": "a@b.c"})
        await conv.say("Hello!")

        assert repr(conv) == "<Conversation conv_id='conv-1' kb_topic='billing' turns=1>"
        assert repr(client.conversation()) == "<Conversation conv_id=None turns=0>"


class TestConcurrency:
    async def test_concurrent_first_turns_share_one_conversation(self, router, make_client):
        """Two concurrent first say() calls are serialised: one server conversation."""
        fake = FakeChat(delay=0.05)
        router.post("/chat").mock(side_effect=fake)
        conv = make_client(router).conversation()
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

    async def test_turns_keep_call_order(self, router, make_client):
        """Queued turns go out in the order say() was called."""
        fake = FakeChat(delay=0.02)
        router.post("/chat").mock(side_effect=fake)
        conv = make_client(router).conversation()

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(conv.say, f"msg {i}")
                await anyio.sleep(0.001)

        assert [b["text"] for b in fake.bodies] == [f"msg {i}" for i in range(5)]
        assert [t.text for t in conv.history] == [f"msg {i}" for i in range(5)]

    async def test_different_conversations_run_concurrently(self, router, make_client):
        """Separate conversations are not serialised with each other."""
        fake = FakeChat(delay=0.3)
        router.post("/chat").mock(side_effect=fake)
        client = make_client(router)
        conversations = [client.conversation() for _ in range(10)]

        with anyio.fail_after(2.5):  # serialised, this would take 3 s
            async with anyio.create_task_group() as tg:
                for conv in conversations:
                    tg.start_soon(conv.say, "hi")

        assert len({c.conv_id for c in conversations}) == 10

    async def test_failure_releases_lock_for_waiters(self, router, make_client):
        """A failing turn lets the queued one proceed."""
        router.post("/chat").mock(
            side_effect=[httpx.Response(400, text="nope"), chat_reply(conv_id="conv-2")]
        )
        conv = make_client(router).conversation()
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


class TestSnapshots:
    async def test_round_trip_through_json(self, client, chat):
        """snapshot() → JSON → resume() continues the same conversation with its history."""
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12}, max_history=10)
        await conv.say("Hello!", context="ctx")
        await conv.say("Refunds?")

        state = json.loads(json.dumps(conv.snapshot()))
        again = client.resume(state)

        assert again.conv_id == "conv-1"
        assert again.kb_topic == "billing"
        assert again.metadata == {"userId": 12}
        assert again.max_history == 10
        assert again.history == conv.history
        await again.say("And shipping?")
        assert chat.bodies[-1]["conv_id"] == "conv-1"
        assert chat.bodies[-1]["client_metadata"] == {"userId": 12, "kb_topic": "billing"}

    async def test_snapshot_has_no_credential(self, router, make_client):
        """Snapshots of either flavor never contain the token or api_key."""
        router.post("/chat").mock(side_effect=FakeChat())
        for kwargs in ({"token": TOKEN}, {"api_key": API_KEY}):
            client = make_client(router, **kwargs)
            client.base_url = "https://app.quickchat.ai"
            client._url = "https://app.quickchat.ai/chat"
            conv = client.conversation()
            await conv.say("Hello!")

            dumped = json.dumps(conv.snapshot())

            assert TOKEN not in dumped
            assert API_KEY not in dumped

    async def test_resumed_conversation_keeps_topic_rule(self, client, chat):
        """A resumed started conversation still refuses to drop its topic."""
        conv = client.conversation(kb_topic="billing")
        await conv.say("Hello!")

        again = client.resume(conv.snapshot())

        with pytest.raises(ValidationError):
            again.kb_topic = None

    async def test_empty_conversation_round_trip(self, client):
        """A conversation that never spoke round-trips too."""
        again = client.resume(client.conversation(kb_topic="x").snapshot())

        assert again.conv_id is None
        assert again.kb_topic == "x"
        assert again.history == ()

    @pytest.mark.parametrize(
        ("mutate", "match"),
        [
            (lambda s: "not a dict", "must be an object"),
            (lambda s: {**s, "kind": "other"}, "not a conversation snapshot"),
            (lambda s: {**s, "version": 99}, "newer than this SDK"),
            (lambda s: {**s, "version": "1"}, "not valid"),
            (lambda s: {**s, "history": {}}, "must be a list"),
            (lambda s: {**s, "conv_id": 5}, "conv_id"),
            (lambda s: {**s, "history": [{"text": "x"}]}, "must be"),
            (
                lambda s: {**s, "history": [{**s["history"][0], "sent_at": "yesterday"}]},
                "ISO 8601",
            ),
        ],
    )
    async def test_bad_snapshots(self, client, chat, mutate, match):
        """A snapshot this SDK did not write is refused with a clear ValidationError."""
        conv = client.conversation()
        await conv.say("Hello!")

        with pytest.raises(ValidationError, match=match):
            client.resume(mutate(conv.snapshot()))

    async def test_resume_bounds_history(self, client, chat):
        """Resuming applies the snapshot's max_history to the stored turns."""
        conv = client.conversation()
        for text in ("a", "b", "c"):
            await conv.say(text)
        state = conv.snapshot()
        state["max_history"] = 1

        again = client.resume(state)

        assert [t.text for t in again.history] == ["c"]


async def test_conversation_type(client):
    """client.conversation() returns a Conversation bound to the client."""
    conv = client.conversation()

    assert isinstance(conv, Conversation)
    assert conv.client is client


async def test_transport_error_keeps_state(client, router):
    """A connection that never opened surfaces typed and leaves the conversation untouched."""
    router.post("/chat").mock(side_effect=httpx.ConnectError("refused"))
    conv = client.conversation()

    with pytest.raises(APIConnectionError):
        await conv.say("Hello!")

    assert conv.conv_id is None
    assert conv.history == ()


class LossyChat(FakeChat):
    """The fake endpoint, with scripted failures: 'landed' records the turn, then drops."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = list(script)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        fate = self.script.pop(0) if self.script else "ok"
        if fate == "lost":
            raise httpx.ReadTimeout("no reply")
        response = await super().__call__(request)
        if fate == "landed":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if fate == "500-after":
            return httpx.Response(500, text="Internal Server Error")
        return response


def lossy(router: respx.Router, script: list[str]) -> LossyChat:
    fake = LossyChat(script)
    router.post("/chat").mock(side_effect=fake)
    return fake


class TestUnconfirmedTurns:
    @pytest.mark.parametrize(
        ("fate", "status"),
        [
            ("lost", TurnStatus.NOT_LANDED),
            ("landed", TurnStatus.LANDED),
            ("500-after", TurnStatus.LANDED),
        ],
    )
    async def test_next_reply_settles_it(self, client, router, fate, status):
        """An ambiguous turn is kept as unconfirmed, then the next ord_number settles it."""
        lossy(router, ["ok", fate, "ok"])
        conv = client.conversation()
        await conv.say("one")

        with pytest.raises(Exception, match="may or may not have recorded") as info:
            await conv.say("two")

        assert info.value.outcome_unknown
        (pending,) = conv.unconfirmed
        assert pending.status is TurnStatus.UNCONFIRMED
        assert pending.landed is None
        assert pending.reply is None
        assert pending.text == "two"
        assert type(info.value).__name__ in pending.error

        await conv.say("three")

        assert conv.unconfirmed == ()
        assert [(t.text, t.status) for t in conv.history] == [
            ("one", TurnStatus.CONFIRMED),
            ("two", status),
            ("three", TurnStatus.CONFIRMED),
        ]
        assert conv.history[1].landed is (status is TurnStatus.LANDED)

    @pytest.mark.parametrize(
        ("script", "status"),
        [
            (["ok", "lost", "lost", "ok"], TurnStatus.NOT_LANDED),
            (["ok", "landed", "landed", "ok"], TurnStatus.LANDED),
            (["ok", "landed", "lost", "ok"], TurnStatus.UNCONFIRMED),
        ],
    )
    async def test_several_pending(self, client, router, script, status):
        """Several pending turns are settled when all or none landed, else left unknown."""
        lossy(router, script)
        conv = client.conversation()
        await conv.say("one")
        for text in ("two", "three"):
            with pytest.raises(Exception, match="may or may not"):
                await conv.say(text)

        await conv.say("four")

        assert [t.status for t in conv.history[1:3]] == [status, status]
        assert conv.unconfirmed == ()

    async def test_foreign_messages_leave_it_unknown(self, client, router):
        """If the numbers do not add up (another writer), nothing is claimed."""
        router.post("/chat").mock(
            side_effect=[
                chat_reply(ord_number=3),
                httpx.ReadTimeout("slow"),
                chat_reply(ord_number=11),
            ]
        )
        conv = client.conversation()
        await conv.say("one")
        with pytest.raises(Exception, match="may or may not"):
            await conv.say("two")

        await conv.say("three")

        assert conv.history[1].status is TurnStatus.UNCONFIRMED

    async def test_unconfirmed_first_turn_blocks_a_second_conversation(self, client, router):
        """After an ambiguous first turn, say() refuses to open a second conversation."""
        fake = lossy(router, ["landed"])
        conv = client.conversation()
        with pytest.raises(Exception, match="may or may not"):
            await conv.say("Hello?")

        with pytest.raises(UnconfirmedStartError, match="start_over"):
            await conv.say("Hello again?")
        assert len(fake.bodies) == 1

        conv.start_over()
        reply = await conv.say("Hello again?")

        assert reply.conv_id == "conv-2"
        assert [t.status for t in conv.history] == [
            TurnStatus.UNCONFIRMED,
            TurnStatus.CONFIRMED,
        ]

    async def test_cancelled_turn_is_not_recorded(self, router, make_client):
        """Cancellation leaves no unconfirmed turn behind (the caller chose to stop)."""
        started = anyio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            started.set()
            await anyio.sleep_forever()
            raise AssertionError

        router.post("/chat").mock(side_effect=hang)
        conv = make_client(router).conversation(conv_id="c-1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.say, "hi")
            await started.wait()
            tg.cancel_scope.cancel()

        assert conv.history == ()
        assert conv.unconfirmed == ()

    async def test_survives_snapshot_and_resume(self, client, router):
        """Pending turns and the last ord_number round-trip, and settle after resume."""
        lossy(router, ["ok", "landed", "ok"])
        conv = client.conversation()
        await conv.say("one")
        with pytest.raises(Exception, match="may or may not"):
            await conv.say("two")

        again = client.resume(json.loads(json.dumps(conv.snapshot())))
        assert [t.text for t in again.unconfirmed] == ["two"]
        await again.say("three")

        assert [t.status for t in again.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]

    async def test_settles_without_history(self, router, make_client):
        """max_history=0 still settles pending turns (they are tracked apart)."""
        lossy(router, ["ok", "lost", "ok"])
        conv = make_client(router).conversation(max_history=0)
        await conv.say("one")
        with pytest.raises(Exception, match="may or may not"):
            await conv.say("two")
        assert len(conv.unconfirmed) == 1

        await conv.say("three")

        assert conv.unconfirmed == ()
        assert conv.history == ()

    async def test_bad_status_in_snapshot(self, client, chat):
        """An unknown turn status in a snapshot is refused."""
        conv = client.conversation()
        await conv.say("hi")
        state = conv.snapshot()
        state["history"][0]["status"] = "maybe"  # type: ignore[index]

        with pytest.raises(ValidationError, match="status"):
            client.resume(state)
