"""`AsyncQuickchat.conversation_for()`: a user's conversation kept in a store, turn by turn."""

from __future__ import annotations

import json

import anyio
import pytest

from quickchat_async import (
    AsyncQuickchat,
    InternalServerError,
    MemoryStore,
    ServiceUnavailableError,
    SQLiteStore,
    StoreConflictError,
    StoredConversation,
    StoreError,
    StoreLockTimeoutError,
    StoreRecord,
    TurnStatus,
    UnconfirmedStartError,
    ValidationError,
)
from quickchat_async._stores._conversation import DEFAULT_STORED_HISTORY, default_lock_ttl
from quickchat_async.emulator import Fault, Role
from tests.conftest import API_KEY, SCENARIO_ID, TOKEN

from .conftest import STORE_KINDS, recorded


pytestmark = pytest.mark.anyio


@pytest.fixture(name="store")
def _store() -> MemoryStore:
    return MemoryStore()


def stored_texts(record: StoreRecord | None) -> list[str]:
    assert record is not None
    conversation = json.loads(record.data)["conversation"]
    return [turn["text"] for turn in conversation["history"]]


def slow(seconds: float) -> Fault:
    """A reply `seconds` late (the turn is recorded first), so that concurrent turns overlap."""
    return Fault("slow_headers", delay=seconds)


def sent_metadata(emulator, conv_id: str) -> list[object]:
    """The client_metadata of each user message the emulator recorded in a conversation."""
    return [m.client_metadata for m in emulator.messages(conv_id) if m.role is Role.USER]


class SlowSaveStore(MemoryStore):
    """A MemoryStore whose saves take a while, or fail."""

    __slots__ = ("save_delay", "save_error")

    def __init__(self) -> None:
        super().__init__()
        self.save_delay = 0.0
        self.save_error: StoreError | None = None

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        await anyio.sleep(self.save_delay)
        if self.save_error is not None:
            raise self.save_error
        await super().save(user_key, record, replaces=replaces)


class TestStarting:
    async def test_new_user(self, client, store, emulator):
        """A user without a stored conversation starts a new one, and nothing is saved yet."""
        conv = await client.conversation_for("user-1", store=store)

        assert isinstance(conv, StoredConversation)
        assert conv.conv_id is None
        assert conv.history == ()
        assert conv.user_key == "user-1"
        assert await store.load("user-1") is None
        assert emulator.stats().requests == 0

    async def test_first_turn_is_saved(self, client, store, emulator):
        """The first turn's conv_id and history are saved before say() returns."""
        conv = await client.conversation_for("user-1", store=store)

        reply = await conv.say("Hello!")

        assert reply.html == emulator.messages(reply.conv_id)[-1].text
        assert reply.ord_number == 3
        assert recorded(emulator) == [("Hello!",)]
        assert conv.conv_id == reply.conv_id
        assert [turn.text for turn in conv.history] == ["Hello!"]
        assert stored_texts(await store.load("user-1")) == ["Hello!"]

    async def test_later_loads_continue(self, client, store, emulator):
        """A conversation loaded later continues the same server conversation."""
        first = await client.conversation_for("user-1", store=store)
        await first.say("Hello!")

        again = await client.conversation_for("user-1", store=store)
        reply = await again.say("Still there?")

        assert again.conv_id == first.conv_id
        assert reply.ord_number == 5
        assert [turn.text for turn in again.history] == ["Hello!", "Still there?"]
        assert recorded(emulator) == [("Hello!", "Still there?")]
        assert emulator.user_messages(first.conv_id) == ("Hello!", "Still there?")
        assert emulator.stats().requests == 2

    async def test_turn_round_trip(self, client, store):
        """A stored turn loads back with its text, context, metadata and reply."""
        conv = await client.conversation_for("user-1", store=store, metadata={"plan": "pro"})
        await conv.say("Hi", context="The user's name is Ada.", metadata={"page": "/help"})

        loaded = (await client.conversation_for("user-1", store=store)).history[0]

        assert loaded == conv.history[0]
        assert loaded.context == "The user's name is Ada."
        assert loaded.metadata == {"plan": "pro", "page": "/help"}
        assert loaded.reply.ord_number == 3

    async def test_repr(self, client, store):
        """The repr names the user key, conv_id and turn count, never a message."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("my secret question")

        assert repr(conv) == (
            f"<StoredConversation user_key='user-1' conv_id={conv.conv_id!r} turns=1>"
        )


@pytest.mark.parametrize("store_factory", STORE_KINDS, indirect=True)
class TestConcurrentTurns:
    async def test_two_first_messages(self, store_factory, emulator):
        """Two first messages from one user at once start one conversation, replies in order."""
        # The first turn is still in flight when the second arrives.
        emulator.faults.script([slow(0.2), slow(0.2)])
        replies = []

        async def first_message(text: str) -> None:
            # A client and store of its own: as if each message reached another worker.
            async with emulator.client(max_retries=0) as client:
                conv = await client.conversation_for("user-1", store=store_factory())
                replies.append(await conv.say(text))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first_message, "Hi from tab 1")
            tasks.start_soon(first_message, "Hi from tab 2")

        assert len(emulator.conversations()) == 1
        assert sorted(reply.ord_number for reply in replies) == [3, 5]
        assert len({reply.conv_id for reply in replies}) == 1
        (answered,) = recorded(emulator)
        assert sorted(answered) == ["Hi from tab 1", "Hi from tab 2"]
        stored = await store_factory().load("user-1")
        assert stored_texts(stored) == list(answered)

    async def test_many_turns_in_order(self, store_factory, emulator, client):
        """Turns sent at once for one user run one at a time, each saved, none lost."""
        store = store_factory()

        async def message(number: int) -> None:
            conv = await client.conversation_for("user-1", store=store)
            await conv.say(f"message {number}")

        async with anyio.create_task_group() as tasks:
            for number in range(8):
                tasks.start_soon(message, number)

        conv = await client.conversation_for("user-1", store=store)
        assert len(emulator.conversations()) == 1
        assert [turn.reply.ord_number for turn in conv.history] == list(range(3, 19, 2))
        assert sorted(turn.text for turn in conv.history) == [f"message {n}" for n in range(8)]
        assert recorded(emulator) == [tuple(turn.text for turn in conv.history)]

    async def test_stale_object_loads_latest(self, store_factory, client, emulator):
        """A say() on an object loaded earlier continues the latest stored conversation."""
        early = await client.conversation_for("user-1", store=store_factory())
        other = await client.conversation_for("user-1", store=store_factory())
        await other.say("from the other worker")

        await early.say("from this worker")

        assert early.conv_id == other.conv_id
        assert [turn.text for turn in early.history] == [
            "from the other worker",
            "from this worker",
        ]
        assert recorded(emulator) == [("from the other worker", "from this worker")]


class TestFailures:
    async def test_failed_turn_saves_nothing(self, client, store, emulator):
        """A turn the server did not record (503) saves nothing; the next one starts."""
        emulator.faults.script(["unavailable"])
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(ServiceUnavailableError):
            await conv.say("Hello?")

        assert await store.load("user-1") is None
        assert conv.conv_id is None
        await conv.say("Hello again")
        assert stored_texts(await store.load("user-1")) == ["Hello again"]
        assert recorded(emulator) == [("Hello again",)]

    async def test_unconfirmed_first_turn_is_kept(self, emulator, store):
        """A first message with an unknown outcome is stored, so no worker starts a second one.

        Until start_over() is called, every worker refuses to send: the first message may have
        opened a server conversation whose conv_id never arrived.
        """
        emulator.faults.script(["error_before"])  # a 500: it may have landed, for all we know
        async with emulator.client(max_retries=0) as one, emulator.client(max_retries=0) as two:
            conv = await one.conversation_for("user-1", store=store)
            with pytest.raises(InternalServerError):
                await conv.say("Hello?")
            assert [turn.status for turn in conv.unconfirmed] == [TurnStatus.UNCONFIRMED]

            other_worker = await two.conversation_for("user-1", store=store)
            with pytest.raises(UnconfirmedStartError):
                await other_worker.say("Anyone there?")
            assert emulator.stats().requests == 1

            await other_worker.start_over()
            await conv.say("Hello again")

        assert recorded(emulator) == [("Hello again",)]
        assert [turn.text for turn in conv.history] == ["Hello?", "Hello again"]

    @pytest.mark.parametrize(
        ("fault", "status"),
        [("error_before", TurnStatus.NOT_LANDED), ("error_after", TurnStatus.LANDED)],
    )
    async def test_unconfirmed_later_turn_is_settled(self, client, store, emulator, fault, status):
        """A later turn with an unknown outcome is stored, and the next reply settles it."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        # A 500, the turn recorded or not: the next ord_number will show which.
        emulator.faults.script([fault])
        with pytest.raises(InternalServerError):
            await conv.say("two")

        again = await client.conversation_for("user-1", store=store)
        assert [turn.text for turn in again.unconfirmed] == ["two"]
        await again.say("three")

        statuses = [(turn.text, turn.status) for turn in again.history]
        assert statuses == [
            ("one", TurnStatus.CONFIRMED),
            ("two", status),
            ("three", TurnStatus.CONFIRMED),
        ]
        assert again.unconfirmed == ()
        landed = ("one", "two", "three") if status is TurnStatus.LANDED else ("one", "three")
        assert recorded(emulator) == [landed]

    async def test_start_over_without_cause(self, client, store):
        """start_over() changes nothing for a user without an unconfirmed first message."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.start_over()
        assert await store.load("user-1") is None

        await conv.say("one")
        before = await store.load("user-1")
        await conv.start_over()
        assert await store.load("user-1") == before

    async def test_unconfirmed_not_stored_is_logged(self, client, emulator, caplog):
        """If even the unconfirmed turn cannot be saved, the turn's own error is raised."""
        store = SlowSaveStore()
        store.save_error = StoreError("disk full")
        emulator.faults.script(["error_before"])
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(InternalServerError):
            await conv.say("Hello?")

        assert "Could not store the unconfirmed turn" in caplog.text
        assert "Hello?" not in caplog.text

    async def test_failed_later_turn_keeps_record(self, client, store, emulator):
        """A failed later turn leaves the stored record as it was."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        before = await store.load("user-1")
        emulator.faults.script(["unavailable"])

        with pytest.raises(ServiceUnavailableError):
            await conv.say("two")

        assert await store.load("user-1") == before

    async def test_lock_timeout(self, client, store, emulator):
        """When the user's lock stays busy, say() raises StoreLockTimeoutError and sends nothing."""
        conv = await client.conversation_for("user-1", store=store, lock_timeout=0.2)
        caught: list[StoreLockTimeoutError] = []

        async def say() -> None:
            with pytest.raises(StoreLockTimeoutError) as info:
                await conv.say("Hello?")
            caught.append(info.value)

        async with store.lock("user-1", ttl=10, timeout=1), anyio.create_task_group() as tasks:
            tasks.start_soon(say)

        assert len(caught) == 1
        assert emulator.stats().requests == 0

    async def test_conflict_keeps_other_and_carries_reply(self, client, store, emulator):
        """If another worker saved during the turn (its lock had expired), this turn is refused.

        The other worker's record stays; the error carries the reply that was not stored.
        """
        conv = await client.conversation_for("user-1", store=store)
        other = StoreRecord('{"other": "worker"}', "other-revision")

        async def overwrite() -> None:
            await anyio.sleep(0.05)
            await store.save("user-1", other, replaces=None)

        emulator.faults.script([slow(0.2)])
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(overwrite)
            with pytest.raises(StoreConflictError) as caught:
                await conv.say("Hello")

        reply = caught.value.reply
        assert reply is not None
        assert reply.html == emulator.messages(reply.conv_id)[-1].text
        assert emulator.user_messages(reply.conv_id) == ("Hello",)
        assert await store.load("user-1") == other

    async def test_save_error_carries_reply(self, client, emulator):
        """When saving fails after the reply, the StoreError carries the reply."""
        store = SlowSaveStore()
        store.save_error = StoreError("disk full")
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(StoreError, match="disk full") as caught:
            await conv.say("Hello")

        reply = caught.value.reply
        assert reply is not None
        assert reply.html == emulator.messages(reply.conv_id)[-1].text
        assert recorded(emulator) == [("Hello",)]
        assert conv.conv_id is None

    async def test_cancel_during_save_still_saves(self, client, emulator):
        """A cancellation that arrives while the turn is being saved waits for the save."""
        store = SlowSaveStore()
        store.save_delay = 0.5
        emulator.faults.script([slow(0.05)])
        conv = await client.conversation_for("user-1", store=store)

        with anyio.move_on_after(0.25):  # during the save, which takes 0.05 to 0.55 s
            await conv.say("Hello")

        assert stored_texts(await store.load("user-1")) == ["Hello"]


class TestHistoryBound:
    async def test_default(self, client, store):
        """By default a stored conversation keeps its last 100 turns."""
        conv = await client.conversation_for("user-1", store=store)

        assert conv.max_history == DEFAULT_STORED_HISTORY == 100

    async def test_bounded(self, client, store):
        """With max_history, the store keeps only the last turns."""
        conv = await client.conversation_for("user-1", store=store, max_history=2)
        for text in ["one", "two", "three"]:
            await conv.say(text)

        assert stored_texts(await store.load("user-1")) == ["two", "three"]
        assert [turn.text for turn in conv.history] == ["two", "three"]

    async def test_tightened_later(self, client, store):
        """A smaller bound given later trims the stored history at the next turn."""
        conv = await client.conversation_for("user-1", store=store, max_history=None)
        for text in ["one", "two", "three"]:
            await conv.say(text)

        tighter = await client.conversation_for("user-1", store=store, max_history=1)
        assert [turn.text for turn in tighter.history] == ["three"]
        await tighter.say("four")
        assert stored_texts(await store.load("user-1")) == ["four"]

    async def test_zero_keeps_only_conv_id(self, client, store, emulator):
        """max_history=0 stores the conv_id alone, and the conversation still continues."""
        conv = await client.conversation_for("user-1", store=store, max_history=0)
        await conv.say("one")
        await conv.say("two")

        assert stored_texts(await store.load("user-1")) == []
        assert recorded(emulator) == [("one", "two")]
        assert conv.conv_id is not None


class TestRecordFormat:
    async def test_envelope(self, client, store):
        """A record is a versioned envelope around the conversation's own versioned snapshot."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("Hello")

        record = await store.load("user-1")
        assert record is not None
        envelope = json.loads(record.data)
        assert envelope["kind"] == "quickchat-async/stored-conversation"
        assert envelope["version"] == 1
        assert envelope["user_key"] == "user-1"
        assert envelope["scenario_id"] == SCENARIO_ID
        assert envelope["conversation"]["kind"] == "quickchat-async/conversation"
        assert envelope["conversation"]["conv_id"] == conv.conv_id

    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_no_credential(self, emulator, store, flavor):
        """A stored record never contains the token or api_key, in either flavor."""
        async with emulator.client(flavor=flavor, max_retries=0) as client:
            conv = await client.conversation_for("user-1", store=store)
            await conv.say("Hello")
            await conv.say("Still there?")

        record = await store.load("user-1")
        assert record is not None
        assert recorded(emulator) == [("Hello", "Still there?")]
        assert TOKEN not in record.data
        assert API_KEY not in record.data

    async def test_newer_format_refused(self, client, store):
        """A record from a newer SDK raises a StoreError asking to upgrade."""
        data = json.dumps({"kind": "quickchat-async/stored-conversation", "version": 99})
        await store.save("user-1", StoreRecord(data, "r1"), replaces=None)

        with pytest.raises(StoreError, match="upgrade"):
            await client.conversation_for("user-1", store=store)

    @pytest.mark.parametrize(
        "data",
        [
            "not json",
            "[]",
            '{"kind": "something else"}',
            '{"kind": "quickchat-async/stored-conversation", "version": 0}',
            '{"kind": "quickchat-async/stored-conversation", "version": 1}',
            (
                '{"kind": "quickchat-async/stored-conversation", "version": 1, '
                '"scenario_id": "scenario-stores", "conversation": {"kind": "nope"}}'
            ),
        ],
    )
    async def test_unreadable(self, client, store, data):
        """A record that is not one this SDK wrote raises StoreError naming the user key."""
        await store.save("user-1", StoreRecord(data, "r1"), replaces=None)

        with pytest.raises(StoreError, match="user-1"):
            await client.conversation_for("user-1", store=store)

    async def test_other_scenario(self, emulator, client, store):
        """A record written for another AI Agent is refused, not sent to this one."""
        await (await client.conversation_for("user-1", store=store)).say("Hello")

        async with emulator.client(scenario_id="another-agent", max_retries=0) as other:
            with pytest.raises(StoreError, match="another-agent"):
                await other.conversation_for("user-1", store=store)
        assert emulator.stats().requests == 1


class TestSettings:
    async def test_kb_topic_on_every_request(self, client, store, emulator):
        """kb_topic starts the conversation and goes out on every later turn."""
        conv = await client.conversation_for("user-1", store=store, kb_topic="billing")
        await conv.say("one")
        again = await client.conversation_for("user-1", store=store)
        await again.say("two")

        assert sent_metadata(emulator, again.conv_id) == [
            {"kb_topic": "billing"},
            {"kb_topic": "billing"},
        ]
        assert again.kb_topic == "billing"

    async def test_kb_topic_value_changes(self, client, store, emulator):
        """A new kb_topic value for a stored conversation applies from the next turn."""
        await (await client.conversation_for("user-1", store=store, kb_topic="a")).say("one")

        conv = await client.conversation_for("user-1", store=store, kb_topic="b")
        await conv.say("two")

        assert sent_metadata(emulator, conv.conv_id) == [{"kb_topic": "a"}, {"kb_topic": "b"}]

    async def test_kb_topic_cannot_appear(self, client, store):
        """A kb_topic for a stored conversation that started without one is refused."""
        await (await client.conversation_for("user-1", store=store)).say("one")

        with pytest.raises(ValidationError, match="kb_topic"):
            await client.conversation_for("user-1", store=store, kb_topic="billing")

    async def test_metadata_replaced(self, client, store, emulator):
        """Metadata given for a stored conversation replaces the stored metadata."""
        await (await client.conversation_for("user-1", store=store, metadata={"v": 1})).say("a")
        await (await client.conversation_for("user-1", store=store)).say("b")
        conv = await client.conversation_for("user-1", store=store, metadata={"v": 2})
        await conv.say("c")

        assert sent_metadata(emulator, conv.conv_id) == [{"v": 1}, {"v": 1}, {"v": 2}]

    async def test_forget(self, client, store, emulator):
        """forget() deletes the stored conversation; the next turn starts a new one."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        first = conv.conv_id

        await conv.forget()

        assert conv.conv_id is None
        assert await store.load("user-1") is None
        await conv.say("two")
        assert conv.conv_id != first
        assert recorded(emulator) == [("one",), ("two",)]

    async def test_reload(self, client, store):
        """reload() shows turns that another object saved."""
        mine = await client.conversation_for("user-1", store=store)
        other = await client.conversation_for("user-1", store=store)
        await other.say("one")

        assert mine.history == ()
        await mine.reload()
        assert [turn.text for turn in mine.history] == ["one"]

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"user_key": ""}, "user_key"),
            ({"user_key": 7}, "user_key"),
            ({"store": object()}, "ConversationStore"),
            ({"max_history": -1}, "max_history"),
            ({"lock_ttl": 0}, "lock_ttl"),
            ({"lock_ttl": float("inf")}, "lock_ttl"),
            ({"lock_timeout": -1}, "lock_timeout"),
            ({"kb_topic": ""}, "kb_topic"),
            ({"metadata": {"kb_topic": "x"}}, "kb_topic"),
        ],
    )
    async def test_bad_arguments(self, client, store, options, match):
        """Bad arguments raise ValidationError before the store is used."""
        arguments = {"user_key": "user-1", "store": store, **options}
        user_key = arguments.pop("user_key")

        with pytest.raises(ValidationError, match=match):
            await client.conversation_for(user_key, **arguments)


class TestLockSizing:
    async def test_default_ttl_outlasts_a_turn(self, client):
        """By default the lock lives longer than the client's slowest turn."""
        # 3 attempts of 30 s, 2 backoffs of at most 9 s, 5 s for the store.
        async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID) as default:
            assert default_lock_ttl(default) == 113.0

        async with AsyncQuickchat(
            token=TOKEN, scenario_id=SCENARIO_ID, timeout=10, max_retries=0
        ) as quick:
            assert default_lock_ttl(quick) == 15.0

        async with AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, timeout=None) as slow:
            assert default_lock_ttl(slow) == 120.0

    async def test_defaults_and_overrides(self, client, store):
        """lock_timeout defaults to twice lock_ttl; both can be set."""
        conv = await client.conversation_for("user-1", store=store)
        assert conv.lock_ttl == default_lock_ttl(client)
        assert conv.lock_timeout == 2 * conv.lock_ttl

        tuned = await client.conversation_for("user-1", store=store, lock_ttl=20, lock_timeout=5)
        assert (tuned.lock_ttl, tuned.lock_timeout) == (20.0, 5.0)


class TestRestart:
    async def test_restart_resumes_every_user(self, emulator, tmp_path):
        """A new process on the same SQLite file resumes every user's conversation."""
        path = tmp_path / "bot.db"
        users = ["alice", "bob", "carol"]
        async with emulator.client(max_retries=0) as client, SQLiteStore(path) as store:
            for user in users:
                conv = await client.conversation_for(user, store=store)
                await conv.say(f"{user} 1")
                await conv.say(f"{user} 2")
        conv_ids = [conv.conv_id for conv in emulator.conversations()]

        async with emulator.client(max_retries=0) as client, SQLiteStore(path) as store:
            for user in users:
                conv = await client.conversation_for(user, store=store)
                assert [turn.text for turn in conv.history] == [f"{user} 1", f"{user} 2"]
                reply = await conv.say(f"{user} 3")
                assert reply.ord_number == 7

        assert [conv.conv_id for conv in emulator.conversations()] == conv_ids
        assert recorded(emulator) == [tuple(f"{user} {n}" for n in (1, 2, 3)) for user in users]
