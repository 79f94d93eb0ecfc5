"""The session rules with no I/O: what a conversation remembers, and each turn's effect on it."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from quickchat_async import (
    APIConnectionError,
    BadRequestError,
    HTTPResponse,
    InternalServerError,
    JSONValue,
    QuickchatError,
    Reply,
    Turn,
    TurnStatus,
    UnconfirmedStartError,
    ValidationError,
)
from quickchat_async._session import Session
from quickchat_async._snapshot import SNAPSHOT_VERSION, session_from_snapshot, snapshot_of

from .conftest import API_KEY, TOKEN


def reply(ord_number: int | None, conv_id: str = "conv-1") -> Reply:
    return Reply(conv_id=conv_id, html=f"reply {ord_number}", ord_number=ord_number)


def lost() -> APIConnectionError:
    """An error after which the message may have been recorded."""
    return APIConnectionError("lost the connection", url="u", outcome_unknown=True)


def refused() -> BadRequestError:
    """An error after which the message was certainly not recorded."""
    return BadRequestError(
        "refused", status_code=400, server_message="", response=HTTPResponse(400, {}, b"")
    )


def say(
    session: Session,
    text: str,
    outcome: Reply | QuickchatError,
    *,
    context: str | None = None,
    metadata: dict[str, JSONValue] | None = None,
) -> None:
    """One whole turn: begin, then confirm with a reply, or fail with an error."""
    turn = session.begin(text, context=context, turn_metadata=metadata)
    if isinstance(outcome, Reply):
        session.confirm(turn, outcome)
    else:
        session.fail(turn, outcome)


def statuses(session: Session) -> list[tuple[str, TurnStatus]]:
    return [(turn.text, turn.status) for turn in session.history]


class TestConvId:
    def test_kept_from_the_first_reply(self):
        """The first reply's conv_id is the conversation's, sent with every later turn."""
        session = Session()
        first = session.begin("Hello!", context=None, turn_metadata=None)
        assert first.conv_id is None

        session.confirm(first, reply(3))
        second = session.begin("Again", context=None, turn_metadata=None)

        assert session.conv_id == second.conv_id == "conv-1"

    def test_a_stored_one_is_continued(self):
        """A session made from a stored conv_id sends it from the first turn on."""
        session = Session(conv_id="conv-77")

        assert session.begin("Back again", context=None, turn_metadata=None).conv_id == "conv-77"
        assert session.started()

    @pytest.mark.parametrize("conv_id", ["", 5])
    def test_bad(self, conv_id):
        """A conv_id is a non-empty string or None."""
        with pytest.raises(ValidationError, match="conv_id"):
            Session(conv_id=conv_id)


class TestKbTopic:
    def test_value_may_change(self):
        """A started conversation may change its topic's value."""
        session = Session(kb_topic="billing")
        say(session, "Hello!", reply(3))

        session.set_kb_topic("shipping")

        assert session.kb_topic == "shipping"
        turn = session.begin("Where is my parcel?", context=None, turn_metadata=None)
        assert turn.client_metadata == {"kb_topic": "shipping"}

    def test_cannot_be_removed_once_started(self):
        """Removing kb_topic mid-conversation would silently disable the filter: refused."""
        session = Session(kb_topic="billing")
        say(session, "Hello!", reply(3))

        with pytest.raises(ValidationError, match="cannot be removed"):
            session.set_kb_topic(None)

        assert session.kb_topic == "billing"

    def test_cannot_be_introduced_after_start(self):
        """Introducing kb_topic after the first turn is refused, naming the rule."""
        session = Session()
        say(session, "Hello!", reply(3))

        with pytest.raises(ValidationError, match="every request, the first included"):
            session.set_kb_topic("billing")

    def test_cannot_be_introduced_on_a_stored_conv_id(self):
        """A session continued from a conv_id counts as started."""
        with pytest.raises(ValidationError, match="introduced"):
            Session(conv_id="conv-5").set_kb_topic("billing")

    def test_set_freely_before_the_first_turn(self):
        """Before the first turn the topic may be set or cleared at will."""
        session = Session()
        session.set_kb_topic("billing")
        session.set_kb_topic(None)
        session.set_kb_topic("shipping")

        turn = session.begin("Hello!", context=None, turn_metadata=None)

        assert turn.client_metadata == {"kb_topic": "shipping"}

    def test_started_while_the_first_turn_is_in_flight(self):
        """Once the first turn has begun, the server may know the conversation."""
        session = Session()
        turn = session.begin("Hello!", context=None, turn_metadata=None)

        with pytest.raises(ValidationError):
            session.set_kb_topic("billing")
        session.abandon(turn)
        session.set_kb_topic("billing")

        assert not session.started()

    @pytest.mark.parametrize("topic", ["", 5])
    def test_bad(self, topic):
        """A topic is a non-empty string."""
        with pytest.raises(ValidationError, match="kb_topic"):
            Session(kb_topic=topic)
        with pytest.raises(ValidationError, match="kb_topic"):
            Session().set_kb_topic(topic)


class TestMetadata:
    def test_merged_with_the_turns_and_kb_topic(self):
        """client_metadata = the conversation's, the turn's over it, then kb_topic."""
        session = Session(kb_topic="billing", metadata={"userId": 12, "plan": "free"})

        first = session.begin("Hello!", context=None, turn_metadata={"plan": "pro", "page": "/"})
        session.confirm(first, reply(3))
        second = session.begin("And then?", context=None, turn_metadata=None)

        assert first.client_metadata == {
            "userId": 12,
            "plan": "pro",
            "page": "/",
            "kb_topic": "billing",
        }
        assert list(first.client_metadata)[-1] == "kb_topic"
        assert second.client_metadata == {"userId": 12, "plan": "free", "kb_topic": "billing"}
        assert session.metadata == {"userId": 12, "plan": "free"}

    def test_read_only_and_copied(self):
        """The session keeps its own copy; its metadata view cannot be mutated."""
        original = {"userId": 12}
        session = Session(metadata=original)
        original["userId"] = 13

        with pytest.raises(TypeError):
            session.metadata["userId"] = 14  # type: ignore[index]
        assert session.begin("hi", context=None, turn_metadata=None).client_metadata == {
            "userId": 12
        }

    def test_none_at_all(self):
        """With no metadata and no topic, a turn sends no client_metadata."""
        assert not Session().begin("hi", context=None, turn_metadata=None).client_metadata

    def test_five_keys_with_kb_topic(self):
        """Five keys including kb_topic are fine; a sixth from the turn is refused, state kept."""
        session = Session(kb_topic="t", metadata={"a": 1, "b": 2, "c": 3, "d": 4})
        say(session, "hi", reply(3))

        with pytest.raises(ValidationError, match="at most 5, kb_topic included"):
            session.begin("hi", context=None, turn_metadata={"e": 5})

        assert len(session.history) == 1
        assert not session.in_flight

    def test_six_keys_refused_at_creation(self):
        """Metadata plus kb_topic beyond 5 keys is refused up front."""
        with pytest.raises(ValidationError, match="at most 5"):
            Session(kb_topic="t", metadata={str(i): i for i in range(5)})

    def test_setting_a_topic_counts_keys(self):
        """Setting a topic that would make a sixth key is refused."""
        session = Session(metadata={str(i): i for i in range(5)})

        with pytest.raises(ValidationError, match="at most 5"):
            session.set_kb_topic("t")

    def test_kb_topic_has_its_own_argument(self):
        """kb_topic inside the conversation's metadata is refused."""
        with pytest.raises(ValidationError, match=r"kb_topic=\.\.\."):
            Session(metadata={"kb_topic": "billing"})


class TestHistory:
    def test_a_confirmed_turn(self):
        """A turn records what was sent, the reply and UTC times."""
        session = Session(kb_topic="billing", metadata={"userId": 12})
        before = dt.datetime.now(dt.UTC)
        answer = reply(3)

        say(session, "Hello!", answer, context="ctx", metadata={"page": "/"})

        (turn,) = session.history
        assert isinstance(turn, Turn)
        assert (turn.text, turn.context, turn.reply) == ("Hello!", "ctx", answer)
        assert turn.metadata == {"userId": 12, "page": "/", "kb_topic": "billing"}
        assert turn.kb_topic == "billing"
        assert turn.status is TurnStatus.CONFIRMED
        assert before <= turn.sent_at <= turn.received_at <= dt.datetime.now(dt.UTC)
        assert turn.sent_at.tzinfo is dt.UTC

    def test_a_tuple_snapshot_oldest_first(self):
        """history is an immutable tuple, oldest first; a copy taken earlier does not change."""
        session = Session()
        say(session, "one", reply(3))
        view = session.history
        say(session, "two", reply(5))

        assert [t.text for t in view] == ["one"]
        assert [t.text for t in session.history] == ["one", "two"]

    def test_max_history(self):
        """max_history keeps only the last N turns; the conversation goes on."""
        session = Session(max_history=2)
        for n, text in enumerate(("one", "two", "three")):
            say(session, text, reply(3 + 2 * n))

        assert [t.text for t in session.history] == ["two", "three"]
        assert session.conv_id == "conv-1"

    def test_max_history_zero(self):
        """max_history=0 keeps no turns, and still the conv_id."""
        session = Session(max_history=0)
        say(session, "one", reply(3))

        assert session.history == ()
        assert session.begin("two", context=None, turn_metadata=None).conv_id == "conv-1"

    @pytest.mark.parametrize("max_history", [-1, 1.0, "3"])
    def test_bad_max_history(self, max_history):
        """max_history is a non-negative integer or None."""
        with pytest.raises(ValidationError, match="max_history"):
            Session(max_history=max_history)

    def test_a_refused_turn_leaves_nothing(self):
        """A turn that cannot have reached the server adds nothing."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", refused())

        assert [t.text for t in session.history] == ["one"]
        assert session.unconfirmed == ()
        assert not session.in_flight

    def test_an_abandoned_turn_leaves_nothing(self):
        """A cancelled turn adds nothing: the caller chose to stop."""
        session = Session(conv_id="c-1")
        turn = session.begin("hi", context=None, turn_metadata=None)

        session.abandon(turn)

        assert session.history == ()
        assert session.unconfirmed == ()
        assert not session.in_flight


class TestUnconfirmedTurns:
    @pytest.mark.parametrize(
        ("next_ord", "status"),
        [(5, TurnStatus.NOT_LANDED), (7, TurnStatus.LANDED)],
    )
    def test_the_next_reply_settles_it(self, next_ord, status, caplog):
        """A turn kept as unconfirmed is settled by the next reply's ord_number."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())

        (pending,) = session.unconfirmed
        assert (pending.text, pending.status, pending.landed, pending.reply) == (
            "two",
            TurnStatus.UNCONFIRMED,
            None,
            None,
        )
        assert pending.error == "APIConnectionError: lost the connection"

        with caplog.at_level(logging.INFO, logger="quickchat_async"):
            say(session, "three", reply(next_ord))

        assert session.unconfirmed == ()
        assert statuses(session) == [
            ("one", TurnStatus.CONFIRMED),
            ("two", status),
            ("three", TurnStatus.CONFIRMED),
        ]
        assert session.history[1].landed is (status is TurnStatus.LANDED)
        assert f"1 unconfirmed message(s) of conversation conv-1: {status.value}" in caplog.text

    def test_a_5xx_is_unconfirmed_too(self):
        """Any error whose outcome is unknown keeps the turn, with the error's name."""
        session = Session()
        say(session, "one", reply(3))
        error = InternalServerError(
            "oops", status_code=500, server_message="", response=HTTPResponse(500, {}, b"")
        )
        say(session, "two", error)

        assert session.unconfirmed[0].error == "InternalServerError: oops"

    @pytest.mark.parametrize(
        ("next_ord", "status"),
        [
            (5, TurnStatus.NOT_LANDED),
            (9, TurnStatus.LANDED),
            (7, TurnStatus.UNCONFIRMED),  # one of the two landed: the numbers do not say which
        ],
    )
    def test_several_pending(self, next_ord, status):
        """Several pending turns are settled when all or none landed, else left unknown."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())
        say(session, "three", lost())

        say(session, "four", reply(next_ord))

        assert [t.status for t in session.history[1:3]] == [status, status]
        assert session.unconfirmed == ()

    @pytest.mark.parametrize("next_ord", [11, 6, None])
    def test_numbers_that_do_not_add_up(self, next_ord):
        """Another writer, an odd step, or no ord_number at all: nothing is claimed."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())

        say(session, "three", reply(next_ord))

        assert session.history[1].status is TurnStatus.UNCONFIRMED
        assert session.unconfirmed == ()

    def test_a_cancelled_turn_between_leaves_it_unknown(self):
        """A cancelled turn may have landed uncounted: the next reply cannot settle anything."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())
        session.abandon(session.begin("cancelled", context=None, turn_metadata=None))

        say(session, "three", reply(5))

        assert session.history[1].status is TurnStatus.UNCONFIRMED

    def test_unconfirmed_first_turn_blocks_a_second_conversation(self):
        """After an ambiguous first turn, a new turn is refused until start_over()."""
        session = Session()
        say(session, "Hello?", lost())

        with pytest.raises(UnconfirmedStartError, match="start_over"):
            session.begin("Hello again?", context=None, turn_metadata=None)

        session.start_over()
        say(session, "Hello again?", reply(3, conv_id="conv-2"))

        assert session.conv_id == "conv-2"
        assert [t.status for t in session.history] == [
            TurnStatus.UNCONFIRMED,
            TurnStatus.CONFIRMED,
        ]

    def test_start_over_once_started_changes_nothing(self):
        """With a conv_id, start_over() keeps the pending turns: the next reply settles them."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())

        session.start_over()

        assert [t.text for t in session.unconfirmed] == ["two"]

    def test_settled_without_history(self):
        """max_history=0 still settles pending turns (they are tracked apart)."""
        session = Session(max_history=0)
        say(session, "one", reply(3))
        say(session, "two", lost())
        assert len(session.unconfirmed) == 1

        say(session, "three", reply(7))

        assert session.unconfirmed == ()
        assert session.history == ()


# --- snapshots -----------------------------------------------------------------------------


def round_trip(session: Session) -> Session:
    """Through JSON text, as a store or a file keeps it."""
    return session_from_snapshot(json.loads(json.dumps(snapshot_of(session))))


class TestSnapshots:
    def test_round_trip(self):
        """conv_id, kb_topic, metadata, max_history and history survive JSON."""
        session = Session(kb_topic="billing", metadata={"userId": 12}, max_history=10)
        say(session, "Hello!", reply(3), context="ctx")
        say(session, "Refunds?", reply(5))

        again = round_trip(session)

        assert again.conv_id == "conv-1"
        assert again.kb_topic == "billing"
        assert again.metadata == {"userId": 12}
        assert again.max_history == 10
        assert again.history == session.history
        assert again.history[0].reply.raw == session.history[0].reply.raw  # type: ignore[union-attr]

    def test_format(self):
        """A snapshot names its kind and format version, and holds no credential."""
        snapshot = snapshot_of(Session(conv_id="c-1"))

        assert snapshot["kind"] == "quickchat-async/conversation"
        assert snapshot["version"] == SNAPSHOT_VERSION == 1
        assert TOKEN not in json.dumps(snapshot)
        assert API_KEY not in json.dumps(snapshot)

    def test_the_topic_rule_survives(self):
        """A resumed started conversation still refuses to drop its topic."""
        session = Session(kb_topic="billing")
        say(session, "Hello!", reply(3))

        with pytest.raises(ValidationError):
            round_trip(session).set_kb_topic(None)

    def test_empty_session(self):
        """A conversation that never spoke round-trips too."""
        again = round_trip(Session(kb_topic="x"))

        assert (again.conv_id, again.kb_topic, again.history) == (None, "x", ())

    def test_max_history_applied_on_resume(self):
        """The snapshot's max_history bounds the turns it brings back."""
        session = Session()
        for n, text in enumerate("abc"):
            say(session, text, reply(3 + 2 * n))
        snapshot = snapshot_of(session)
        snapshot["max_history"] = 1

        assert [t.text for t in session_from_snapshot(snapshot).history] == ["c"]

    def test_unconfirmed_turns_survive_and_settle(self):
        """Pending turns and the last ord_number round-trip, and settle after resume."""
        session = Session()
        say(session, "one", reply(3))
        say(session, "two", lost())

        again = round_trip(session)
        assert [t.text for t in again.unconfirmed] == ["two"]
        assert again.last_ord == 3
        say(again, "three", reply(7))

        assert [t.status for t in again.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]

    def test_unconfirmed_first_turn_survives(self):
        """A resumed conversation still refuses to open a second server conversation."""
        session = Session()
        say(session, "Hello?", lost())

        with pytest.raises(UnconfirmedStartError):
            round_trip(session).begin("Again", context=None, turn_metadata=None)

    def test_older_snapshots_without_unconfirmed(self):
        """A snapshot without the 'unconfirmed' field (an older SDK's) is read as none."""
        snapshot = snapshot_of(Session(conv_id="c-1"))
        del snapshot["unconfirmed"]

        assert session_from_snapshot(snapshot).unconfirmed == ()

    def test_naive_times_are_utc(self):
        """A time written without a zone is read as UTC."""
        session = Session()
        say(session, "hi", reply(3))
        snapshot = snapshot_of(session)
        snapshot["history"][0]["sent_at"] = "2026-01-02T03:04:05"  # type: ignore[index,call-overload]

        sent_at = session_from_snapshot(snapshot).history[0].sent_at

        assert sent_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    @pytest.mark.parametrize(
        ("mutate", "match"),
        [
            (lambda s: "not a dict", "must be an object"),
            (lambda s: {**s, "kind": "other"}, "not a conversation snapshot"),
            (lambda s: {**s, "version": 99}, "newer than this SDK"),
            (lambda s: {**s, "version": "1"}, "not valid"),
            (lambda s: {**s, "version": 0}, "not valid"),
            (lambda s: {**s, "history": {}}, "must be a list"),
            (lambda s: {**s, "unconfirmed": {}}, "'unconfirmed' must be a list"),
            (lambda s: {**s, "conv_id": 5}, "conv_id"),
            (lambda s: {**s, "max_history": "3"}, "max_history"),
            (lambda s: {**s, "metadata": []}, "metadata"),
            (lambda s: {**s, "history": [{"text": "x"}]}, "must be"),
            (lambda s: {**s, "history": [5]}, "history item"),
            (
                lambda s: {**s, "history": [{**s["history"][0], "sent_at": "yesterday"}]},
                "ISO 8601",
            ),
            (
                lambda s: {**s, "history": [{**s["history"][0], "status": "maybe"}]},
                "status 'maybe' is not known",
            ),
            (
                lambda s: {**s, "history": [{**s["history"][0], "context": 5}]},
                "'context' must be a string or null",
            ),
        ],
    )
    def test_refused(self, mutate, match):
        """A snapshot this SDK did not write is refused with a clear ValidationError."""
        session = Session()
        say(session, "Hello!", reply(3))

        with pytest.raises(ValidationError, match=match):
            session_from_snapshot(mutate(snapshot_of(session)))
