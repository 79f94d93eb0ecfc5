"""`AsyncQuickchat.conversation_for()`: a user's conversation kept in a store, turn by turn."""

from __future__ import annotations

import json

import anyio
import httpx
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

from .conftest import SCENARIO_ID, STORE_KINDS, TOKEN, make_client


pytestmark = pytest.mark.anyio


@pytest.fixture(name="store")
def _store() -> MemoryStore:
    return MemoryStore()


def stored_texts(record: StoreRecord | None) -> list[str]:
    assert record is not None
    conversation = json.loads(record.data)["conversation"]
    return [turn["text"] for turn in conversation["history"]]


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
    async def test_new_user(self, client, store, api):
        """A user without a stored conversation starts a new one, and nothing is saved yet."""
        conv = await client.conversation_for("user-1", store=store)

        assert isinstance(conv, StoredConversation)
        assert conv.conv_id is None
        assert conv.history == ()
        assert conv.user_key == "user-1"
        assert await store.load("user-1") is None
        assert api.received == []

    async def test_first_turn_is_saved(self, client, store):
        """The first turn's conv_id and history are saved before say() returns."""
        conv = await client.conversation_for("user-1", store=store)

        reply = await conv.say("Hello!")

        assert reply.text == "echo: Hello!"
        assert reply.ord_number == 3
        assert conv.conv_id == reply.conv_id
        assert [turn.text for turn in conv.history] == ["Hello!"]
        assert stored_texts(await store.load("user-1")) == ["Hello!"]

    async def test_later_loads_continue(self, client, store, api):
        """A conversation loaded later continues the same server conversation."""
        first = await client.conversation_for("user-1", store=store)
        await first.say("Hello!")

        again = await client.conversation_for("user-1", store=store)
        reply = await again.say("Still there?")

        assert again.conv_id == first.conv_id
        assert reply.ord_number == 5
        assert [turn.text for turn in again.history] == ["Hello!", "Still there?"]
        assert list(api.conversations.values()) == [["Hello!", "Still there?"]]
        assert api.received[1]["conv_id"] == first.conv_id

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
    async def test_two_first_messages(self, store_factory, api):
        """Two first messages from one user at once start one conversation, replies in order."""
        api.delay = 0.2  # the first turn is still in flight when the second arrives
        replies = []

        async def first_message(text: str) -> None:
            # A client and store of its own: as if each message reached another worker.
            async with make_client(api) as client:
                conv = await client.conversation_for("user-1", store=store_factory())
                replies.append(await conv.say(text))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first_message, "Hi from tab 1")
            tasks.start_soon(first_message, "Hi from tab 2")

        assert len(api.conversations) == 1
        assert sorted(reply.ord_number for reply in replies) == [3, 5]
        assert len({reply.conv_id for reply in replies}) == 1
        (answered,) = api.conversations.values()
        stored = await store_factory().load("user-1")
        assert stored_texts(stored) == answered

    async def test_many_turns_in_order(self, store_factory, api, client):
        """Turns sent at once for one user run one at a time, each saved, none lost."""
        store = store_factory()

        async def message(number: int) -> None:
            conv = await client.conversation_for("user-1", store=store)
            await conv.say(f"message {number}")

        async with anyio.create_task_group() as tasks:
            for number in range(8):
                tasks.start_soon(message, number)

        conv = await client.conversation_for("user-1", store=store)
        assert len(api.conversations) == 1
        assert [turn.reply.ord_number for turn in conv.history] == list(range(3, 19, 2))
        assert sorted(turn.text for turn in conv.history) == [f"message {n}" for n in range(8)]

    async def test_stale_object_loads_latest(self, store_factory, client, api):
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
        assert len(api.conversations) == 1


class TestFailures:
    async def test_failed_turn_saves_nothing(self, client, store, api):
        """A turn the server did not record (503) saves nothing; the next one starts."""
        api.fail = [503]
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(ServiceUnavailableError):
            await conv.say("Hello?")

        assert await store.load("user-1") is None
        assert conv.conv_id is None
        await conv.say("Hello again")
        assert stored_texts(await store.load("user-1")) == ["Hello again"]

    async def test_unconfirmed_first_turn_is_kept(self, api, store):
        """A first message with an unknown outcome is stored, so no worker starts a second one.

        Until start_over() is called, every worker refuses to send: the first message may have
        opened a server conversation whose conv_id never arrived.
        """
        api.fail = [500]
        async with make_client(api) as one, make_client(api) as two:
            conv = await one.conversation_for("user-1", store=store)
            with pytest.raises(InternalServerError):
                await conv.say("Hello?")
            assert [turn.status for turn in conv.unconfirmed] == [TurnStatus.UNCONFIRMED]

            other_worker = await two.conversation_for("user-1", store=store)
            with pytest.raises(UnconfirmedStartError):
                await other_worker.say("Anyone there?")
            assert len(api.received) == 1

            await other_worker.start_over()
            await conv.say("Hello again")

        assert len(api.conversations) == 1
        assert [turn.text for turn in conv.history] == ["Hello?", "Hello again"]

    async def test_unconfirmed_later_turn_is_settled(self, client, store, api):
        """A later turn with an unknown outcome is stored, and the next reply settles it."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        api.fail = [500]  # the fake did not record it: the next ord_number will show that
        with pytest.raises(InternalServerError):
            await conv.say("two")

        again = await client.conversation_for("user-1", store=store)
        assert [turn.text for turn in again.unconfirmed] == ["two"]
        await again.say("three")

        statuses = [(turn.text, turn.status) for turn in again.history]
        assert statuses == [
            ("one", TurnStatus.CONFIRMED),
            ("two", TurnStatus.NOT_LANDED),
            ("three", TurnStatus.CONFIRMED),
        ]
        assert again.unconfirmed == ()

    async def test_start_over_without_cause(self, client, store):
        """start_over() changes nothing for a user without an unconfirmed first message."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.start_over()
        assert await store.load("user-1") is None

        await conv.say("one")
        before = await store.load("user-1")
        await conv.start_over()
        assert await store.load("user-1") == before

    async def test_unconfirmed_not_stored_is_logged(self, client, api, caplog):
        """If even the unconfirmed turn cannot be saved, the turn's own error is raised."""
        store = SlowSaveStore()
        store.save_error = StoreError("disk full")
        api.fail = [500]
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(InternalServerError):
            await conv.say("Hello?")

        assert "Could not store the unconfirmed turn" in caplog.text
        assert "Hello?" not in caplog.text

    async def test_failed_later_turn_keeps_record(self, client, store, api):
        """A failed later turn leaves the stored record as it was."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        before = await store.load("user-1")
        api.fail = [503]

        with pytest.raises(ServiceUnavailableError):
            await conv.say("two")

        assert await store.load("user-1") == before

    async def test_lock_timeout(self, client, store, api):
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
        assert api.received == []

    async def test_conflict_keeps_other_and_carries_reply(self, client, store, api):
        """If another worker saved during the turn (its lock had expired), this turn is refused.

        The other worker's record stays; the error carries the reply that was not stored.
        """
        conv = await client.conversation_for("user-1", store=store)
        other = StoreRecord('{"other": "worker"}', "other-revision")

        async def overwrite() -> None:
            await anyio.sleep(0.05)
            await store.save("user-1", other, replaces=None)

        api.delay = 0.2
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(overwrite)
            with pytest.raises(StoreConflictError) as caught:
                await conv.say("Hello")

        assert caught.value.reply is not None
        assert caught.value.reply.text == "echo: Hello"
        assert await store.load("user-1") == other

    async def test_save_error_carries_reply(self, client):
        """When saving fails after the reply, the StoreError carries the reply."""
        store = SlowSaveStore()
        store.save_error = StoreError("disk full")
        conv = await client.conversation_for("user-1", store=store)

        with pytest.raises(StoreError, match="disk full") as caught:
            await conv.say("Hello")

        assert caught.value.reply is not None
        assert caught.value.reply.text == "echo: Hello"
        assert conv.conv_id is None

    async def test_cancel_during_save_still_saves(self, client, api):
        """A cancellation that arrives while the turn is being saved waits for the save."""
        store = SlowSaveStore()
        store.save_delay = 0.5
        api.delay = 0.05
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

    async def test_zero_keeps_only_conv_id(self, client, store, api):
        """max_history=0 stores the conv_id alone, and the conversation still continues."""
        conv = await client.conversation_for("user-1", store=store, max_history=0)
        await conv.say("one")
        await conv.say("two")

        assert stored_texts(await store.load("user-1")) == []
        assert len(api.conversations) == 1
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

    @pytest.mark.parametrize("flavor", ["token", "api_key"])
    async def test_no_credential(self, api, store, flavor):
        """A stored record never contains the token or api_key, in either flavor."""
        http_client = httpx.AsyncClient(transport=httpx.MockTransport(api.handler))
        async with (
            http_client,
            AsyncQuickchat(
                **{flavor: TOKEN}, scenario_id=SCENARIO_ID, http_client=http_client
            ) as client,
        ):
            conv = await client.conversation_for("user-1", store=store)
            await conv.say("Hello")

        record = await store.load("user-1")
        assert record is not None
        assert TOKEN not in record.data

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

    async def test_other_scenario(self, api, store):
        """A record written for another AI Agent is refused, not sent to this one."""
        async with make_client(api) as client:
            await (await client.conversation_for("user-1", store=store)).say("Hello")
        http_client = httpx.AsyncClient(transport=httpx.MockTransport(api.handler))
        async with (
            http_client,
            AsyncQuickchat(
                token=TOKEN, scenario_id="another-agent", http_client=http_client
            ) as other,
        ):
            with pytest.raises(StoreError, match="another-agent"):
                await other.conversation_for("user-1", store=store)


class TestSettings:
    async def test_kb_topic_on_every_request(self, client, store, api):
        """kb_topic starts the conversation and goes out on every later turn."""
        conv = await client.conversation_for("user-1", store=store, kb_topic="billing")
        await conv.say("one")
        again = await client.conversation_for("user-1", store=store)
        await again.say("two")

        assert [body["client_metadata"] for body in api.received] == [
            {"kb_topic": "billing"},
            {"kb_topic": "billing"},
        ]
        assert again.kb_topic == "billing"

    async def test_kb_topic_value_changes(self, client, store, api):
        """A new kb_topic value for a stored conversation applies from the next turn."""
        await (await client.conversation_for("user-1", store=store, kb_topic="a")).say("one")

        conv = await client.conversation_for("user-1", store=store, kb_topic="b")
        await conv.say("two")

        assert api.received[-1]["client_metadata"] == {"kb_topic": "b"}

    async def test_kb_topic_cannot_appear(self, client, store):
        """A kb_topic for a stored conversation that started without one is refused."""
        await (await client.conversation_for("user-1", store=store)).say("one")

        with pytest.raises(ValidationError, match="kb_topic"):
            await client.conversation_for("user-1", store=store, kb_topic="billing")

    async def test_metadata_replaced(self, client, store, api):
        """Metadata given for a stored conversation replaces the stored metadata."""
        await (await client.conversation_for("user-1", store=store, metadata={"v": 1})).say("a")
        await (await client.conversation_for("user-1", store=store)).say("b")
        await (await client.conversation_for("user-1", store=store, metadata={"v": 2})).say("c")

        assert [body["client_metadata"] for body in api.received] == [{"v": 1}, {"v": 1}, {"v": 2}]

    async def test_forget(self, client, store, api):
        """forget() deletes the stored conversation; the next turn starts a new one."""
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("one")
        first = conv.conv_id

        await conv.forget()

        assert conv.conv_id is None
        assert await store.load("user-1") is None
        await conv.say("two")
        assert conv.conv_id != first
        assert len(api.conversations) == 2

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
    async def test_restart_resumes_every_user(self, api, tmp_path):
        """A new process on the same SQLite file resumes every user's conversation."""
        path = tmp_path / "bot.db"
        users = ["alice", "bob", "carol"]
        async with make_client(api) as client, SQLiteStore(path) as store:
            for user in users:
                conv = await client.conversation_for(user, store=store)
                await conv.say(f"{user} 1")
                await conv.say(f"{user} 2")
        conv_ids = set(api.conversations)

        async with make_client(api) as client, SQLiteStore(path) as store:
            for user in users:
                conv = await client.conversation_for(user, store=store)
                assert [turn.text for turn in conv.history] == [f"{user} 1", f"{user} 2"]
                reply = await conv.say(f"{user} 3")
                assert reply.ord_number == 7

        assert set(api.conversations) == conv_ids
        assert sorted(api.conversations.values()) == [
            [f"{user} {n}" for n in (1, 2, 3)] for user in users
        ]
