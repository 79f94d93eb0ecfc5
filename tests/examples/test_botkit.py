"""examples/botkit.py: the Quickchat side every bot example shares, on the in-process emulator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import pytest

from quickchat_async import (
    AsyncQuickchat,
    MemoryStore,
    StoreError,
    StoreLockTimeoutError,
    StoreRecord,
)
from quickchat_async.emulator import Fault, Scenario
from quickchat_async.testing import Emulator

from ._support import load_example


botkit = load_example("botkit.py")
Outcome = botkit.Outcome


@pytest.fixture(name="emulator")
def _emulator() -> Emulator:
    return Emulator()


@pytest.fixture(name="chats")
async def _chats(emulator: Emulator) -> AsyncIterator[object]:
    """A `Chats` on the in-process emulator, with no retries and a memory store."""
    chats = botkit.Chats(emulator.client(max_retries=0), MemoryStore())
    yield chats
    await chats.aclose()


class FailingSaves(MemoryStore):
    """A store that loads and locks, but cannot save."""

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        raise StoreError("the disk is full")


class TestAnswers:
    @pytest.mark.anyio
    async def test_keeps_one_conversation_per_user_key(self, chats, emulator):
        """Each user key continues its own conversation."""
        assert (await chats.answer("a", "Hello!")).text.startswith("Hi there!")
        await chats.answer("b", "Hi")
        answer = await chats.answer("a", "How do refunds work?")
        assert answer.outcome is Outcome.OK
        assert "Return policy: refunds" in answer.text
        texts = [emulator.user_messages(c.conv_id) for c in emulator.conversations()]
        assert texts == [("Hello!", "How do refunds work?"), ("Hi",)]

    @pytest.mark.anyio
    async def test_reset_starts_a_new_conversation(self, chats, emulator):
        """/reset forgets the user's conversation; the next message starts another."""
        await chats.answer("a", "Hello!")
        assert (await chats.answer("a", "/reset")).text == "OK, let's start over."
        await chats.answer("a", "Hello again!")
        texts = [emulator.user_messages(c.conv_id) for c in emulator.conversations()]
        assert texts == [("Hello!",), ("Hello again!",)]

    @pytest.mark.anyio
    async def test_topic_starts_a_conversation_on_that_kb_topic(self, chats, emulator):
        """/topic <name> starts a new conversation whose every message carries that kb_topic."""
        await chats.answer("a", "Hello!")
        answer = await chats.answer("a", "/topic shipping")
        assert answer.text == "OK, a new conversation about shipping."
        await chats.answer("a", "How do returns work?")
        await chats.answer("a", "And delivery?")
        _, shipping = emulator.conversations()
        sent = [m.client_metadata for m in emulator.messages(shipping.conv_id) if m.role == "user"]
        assert sent == [{"kb_topic": "shipping"}, {"kb_topic": "shipping"}]
        assert (await chats.answer("a", "/topic")).text.startswith("The topic is shipping.")

    @pytest.mark.anyio
    async def test_reset_drops_a_chosen_topic(self, chats, emulator):
        """/reset after /topic starts a conversation with no topic."""
        await chats.answer("a", "/topic billing")
        await chats.answer("a", "/reset")
        await chats.answer("a", "Hello!")
        (conversation,) = emulator.conversations()
        assert emulator.messages(conversation.conv_id)[1].client_metadata is None
        assert (await chats.answer("a", "/topic")).text.startswith("No topic is set.")

    @pytest.mark.anyio
    async def test_refuses_a_topic_that_is_not_a_word(self, chats, emulator):
        """A topic with spaces or symbols is refused, and nothing is forgotten or sent."""
        await chats.answer("a", "Hello!")
        answer = await chats.answer("a", "/topic billing and shipping")
        assert answer.outcome is Outcome.REFUSED
        await chats.answer("a", "Still here?")
        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("Hello!", "Still here?")

    @pytest.mark.anyio
    async def test_other_commands_get_the_list_of_commands(self, chats, emulator):
        """/start or /help answers the commands, and does not reach the Agent."""
        assert (await chats.answer("a", "/start")).text == botkit.HELP
        assert (await chats.answer("a", "/help@SomeBot")).text == botkit.HELP
        assert emulator.stats().requests == 0


class TestFailures:
    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("fault", "expected"),
        [
            ("rate_limit", botkit.Answer(botkit.BUSY, Outcome.BUSY, 1.0)),
            ("unavailable", botkit.Answer(botkit.UNAVAILABLE, Outcome.UNAVAILABLE, 1.0)),
            ("error_after", botkit.Answer(botkit.MAYBE_LOST, Outcome.MAYBE_LOST)),
            ("drop_after", botkit.Answer(botkit.MAYBE_LOST, Outcome.MAYBE_LOST)),
            ("not_json", botkit.Answer(botkit.MAYBE_LOST, Outcome.MAYBE_LOST)),
        ],
        ids=["rate_limit", "unavailable", "error_after", "drop_after", "not_json"],
    )
    async def test_answers_each_failure_with_a_message_for_the_user(
        self, chats, emulator, caplog, fault, expected
    ):
        """Each failure gets the user's message for its class; the details go to the log."""
        emulator.faults.script([fault])
        with caplog.at_level(logging.INFO, logger="botkit"):
            answer = await chats.answer("a", "Hello!")
        assert answer == expected
        (record,) = caplog.records
        assert record.getMessage().startswith("a: ")
        assert len(record.getMessage()) > len("a: ") + 20  # the details, for you

    @pytest.mark.anyio
    async def test_an_unreachable_endpoint_is_unavailable(self, caplog):
        """Nothing listening at the base URL: the Agent is unavailable, and you are told why."""
        client = AsyncQuickchat(
            token="t", scenario_id="s", base_url="http://127.0.0.1:1", max_retries=0
        )
        chats = botkit.Chats(client, MemoryStore())
        with caplog.at_level(logging.INFO, logger="botkit"):
            answer = await chats.answer("a", "Hello!")
        await chats.aclose()
        assert answer == botkit.Answer(botkit.UNAVAILABLE, Outcome.UNAVAILABLE)
        (record,) = caplog.records
        assert record.levelno == logging.ERROR
        assert "APIConnectionError" in record.getMessage()

    @pytest.mark.anyio
    async def test_misconfiguration_is_logged_as_an_error(self, caplog):
        """A wrong token tells the user the bot is unavailable, and you why, at ERROR."""
        emulator = Emulator(scenarios=[Scenario("demo", tokens=["the-right-token"])])
        chats = botkit.Chats(emulator.client(token="a-wrong-token"), MemoryStore())
        with caplog.at_level(logging.INFO, logger="botkit"):
            answer = await chats.answer("a", "Hello!")
        await chats.aclose()
        assert answer.outcome is Outcome.UNAVAILABLE
        (record,) = caplog.records
        assert record.levelno == logging.ERROR
        assert "AuthenticationError" in record.getMessage()
        assert "a-wrong-token" not in record.getMessage()

    @pytest.mark.anyio
    async def test_a_conversation_unknown_to_quickchat_is_started_again(self, emulator):
        """A stored conv_id the Agent no longer knows: the message goes to a new conversation."""
        store = MemoryStore()
        old = botkit.Chats(Emulator().client(), store)  # another emulator: another record
        await old.answer("a", "/topic billing")
        await old.answer("a", "Hello!")
        chats = botkit.Chats(emulator.client(), store)
        answer = await chats.answer("a", "How do refunds work?")
        await old.client.aclose()
        await chats.aclose()
        assert answer.outcome is Outcome.OK
        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("How do refunds work?",)
        assert emulator.messages(conversation.conv_id)[1].client_metadata == {"kb_topic": "billing"}

    @pytest.mark.anyio
    async def test_after_an_unconfirmed_first_message_the_next_one_starts_over(
        self, chats, emulator
    ):
        """The user writes again after "may not have arrived": a new conversation takes it."""
        emulator.faults.script(["drop_after"])  # recorded, and the reply lost
        assert (await chats.answer("a", "Hello!")).outcome is Outcome.MAYBE_LOST
        answer = await chats.answer("a", "Hello?")
        assert answer.outcome is Outcome.OK
        assert [emulator.user_messages(c.conv_id) for c in emulator.conversations()] == [
            ("Hello!",),
            ("Hello?",),
        ]

    @pytest.mark.anyio
    async def test_a_reply_the_store_could_not_save_still_reaches_the_user(self, emulator, caplog):
        """When only saving failed, the user gets the reply and you get an ERROR."""
        chats = botkit.Chats(emulator.client(), FailingSaves())
        with caplog.at_level(logging.INFO, logger="botkit"):
            answer = await chats.answer("a", "Hello!")
        await chats.aclose()
        assert answer.outcome is Outcome.OK
        assert answer.text.startswith("Hi there!")
        assert "reply not stored" in caplog.text

    @pytest.mark.anyio
    async def test_the_deadline_answers_may_not_have_arrived(self, emulator):
        """A turn past the deadline is cut short and answered "may not have arrived"."""
        chats = botkit.Chats(emulator.client(), MemoryStore(), deadline=0.2)
        emulator.faults.script([Fault("slow_headers", delay=5.0)])
        with anyio.fail_after(3):
            answer = await chats.answer("a", "Hello!")
        await chats.aclose()
        assert answer == botkit.Answer(botkit.MAYBE_LOST, Outcome.MAYBE_LOST)

    def test_a_user_whose_conversation_is_locked_is_told_to_try_again(self):
        """Another worker holding the user's conversation too long: busy, try again."""
        answer = botkit._failure("a", StoreLockTimeoutError("held by another worker"))
        assert answer == botkit.Answer(botkit.BUSY, Outcome.BUSY)


class TestLifecycle:
    @pytest.mark.anyio
    async def test_in_order_answers_one_user_at_a_time(self, chats):
        """A user's second message waits for the first; another user's does not."""
        order: list[str] = []
        first_in = anyio.Event()
        release = anyio.Event()

        async def first() -> None:
            async with chats.in_order("a"):
                first_in.set()
                await release.wait()
                order.append("a1")

        async def second(key: str, name: str) -> None:
            async with chats.in_order(key):
                order.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await first_in.wait()
            tg.start_soon(second, "a", "a2")
            tg.start_soon(second, "b", "b1")
            with anyio.fail_after(2):
                while "b1" not in order:  # noqa: ASYNC110 -- a plain list
                    await anyio.sleep(0.01)
            release.set()
        assert order == ["b1", "a1", "a2"]

    @pytest.mark.anyio
    async def test_aclose_lets_the_turns_in_flight_finish(self, emulator):
        """Closing waits for a turn in flight, then closes the client; later messages are told."""
        emulator = Emulator(latency=0.3)
        chats = botkit.Chats(emulator.client(), MemoryStore())
        answers: list[object] = []

        async def talk() -> None:
            async with chats.in_order("a"):
                answers.append(await chats.answer("a", "Hello!"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(talk)
            await anyio.sleep(0.1)
            await chats.aclose()
            assert chats.client.is_closed
        (answer,) = answers
        assert answer.outcome is Outcome.OK
        assert (await chats.answer("a", "Hi")).text == botkit.RESTARTING


class TestHelpers:
    @pytest.mark.parametrize(
        ("text", "command"),
        [
            ("Hello", None),
            ("/reset", ("reset", "")),
            ("/topic  billing ", ("topic", "billing")),
            ("/Topic@QuickchatBot billing", ("topic", "billing")),
            ("a /reset", None),
        ],
    )
    def test_parse_command(self, text, command):
        """Commands are a leading slash, a name (any @bot cut off), and their arguments."""
        assert botkit.parse_command(text) == command

    def test_chunks_cut_long_text_at_spaces(self):
        """Long text is cut at a space or line within the limit; short text stays whole."""
        text = "word " * 30
        pieces = botkit.chunks(text.strip(), 32)
        assert all(len(piece) <= 32 for piece in pieces)
        assert " ".join(pieces) == text.strip()
        assert botkit.chunks("short", 32) == ["short"]
        assert botkit.chunks("x" * 70, 32) == ["x" * 32, "x" * 32, "x" * 6]
