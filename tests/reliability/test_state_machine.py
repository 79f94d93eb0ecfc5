"""A stateful property: any run of say / fail / cancel / snapshot / resume keeps the invariants.

Hypothesis drives one conversation through the in-process emulator (no socket, so each step
takes milliseconds) and, after every step, checks the conversation against a model:

- its history is every turn the server confirmed, plus every turn whose outcome was unknown,
  in order, each with the status the model predicts;
- the reconciliation by ord_number is right: a pending turn is settled LANDED exactly when the
  server holds it, NOT_LANDED exactly when it does not, and stays UNCONFIRMED when the numbers
  cannot tell (some landed and some not, or a cancelled turn came between);
- its conv_id never changes once set;
- the emulator's record holds no message twice, and agrees with what the history claims;
- no request is left in the client's transport.

The event loop (asyncio or trio) runs in a blocking portal, so one loop serves a whole run.
"""

from __future__ import annotations

import contextlib
import json

import anyio
import anyio.from_thread
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quickchat_async import (
    AsyncQuickchat,
    Conversation,
    QuickchatError,
    Timeout,
    TurnStatus,
    UnconfirmedStartError,
)
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO

from .rule import TALLY, Rule, assert_no_secret
from .strategies import bounded


#: Faults that end quickly in process; the slow ones (deadlines) have their own scenarios.
FAULTS = (
    Fault("rate_limit", retry_after="0"),
    Fault("unavailable", retry_after=None),
    Fault("error_before"),
    Fault("drop_before"),
    Fault("html_502"),
    Fault("error_after"),
    Fault("drop_after"),
    Fault("truncated", interval=0),
    Fault("reset_mid_body", interval=0),
    Fault("not_json"),
    Fault("missing_reply"),
    Fault("huge_body", size=64 * 1024),
    Fault("endless", interval=0),
)
#: What a turn that was cancelled returns.
CANCELLED = "cancelled"
#: A reply arrives 50 ms late: time for a cancellation to land while the server answers.
LATE = Fault("slow_headers", delay=0.05)


class ConversationMachine(RuleBasedStateMachine):
    """One conversation, its client, the emulator, and a model of what must hold."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.emulator = Emulator(scenarios=[SCENARIO], seed=7)
        self.rule = Rule(self.emulator)
        self.flavor = "current"
        self.client: AsyncQuickchat | None = None
        self.conv: Conversation | None = None
        # The model.
        self.turns: list[str] = []  # texts in history, in order
        self.status: dict[str, TurnStatus] = {}  # what each turn's status must be
        self.pending: list[str] = []  # unconfirmed since the last reply
        # Whether the next reply's ord_number can settle them: "known", "maybe", "broken".
        self.ord_numbers = "known"
        self.cancelled: set[str] = set()  # may or may not be on the server
        self.conv_id: str | None = None

    def teardown(self) -> None:
        if self.client is not None:
            self.portal.call(self.client.aclose)
        self.stack.close()

    # --- helpers ---------------------------------------------------------------------------

    def new_client(self) -> AsyncQuickchat:
        return self.rule.client(
            flavor=self.flavor,
            timeout=Timeout(total=5, connect=5),
            max_response_bytes=16 * 1024,
            max_retries=2,
        )

    async def _say(self, text: str, cancel_after: float | None) -> object:
        assert self.conv is not None
        with anyio.CancelScope() as scope:
            if cancel_after == 0:
                scope.cancel()
            elif cancel_after is not None:
                scope.deadline = anyio.current_time() + cancel_after
            try:
                return await self.conv.say(text)
            except QuickchatError as exc:
                return exc
        return CANCELLED

    def say(self, text: str, cancel_after: float | None = None) -> object:
        """Run one turn; the reply, the error raised, or CANCELLED."""
        try:
            return self.portal.call(self._say, text, cancel_after)
        finally:
            self.emulator.faults.clear()

    def settle(self) -> None:
        """A reply arrived: predict what it tells of the pending turns."""
        assert self.conv is not None
        if self.pending and self.ord_numbers != "broken":
            assert self.conv.conv_id is not None
            server = set(self.emulator.user_messages(self.conv.conv_id))
            landed = [text in server for text in self.pending]
            if all(landed):
                settled = TurnStatus.LANDED
            elif not any(landed):
                settled = TurnStatus.NOT_LANDED
            else:  # the numbers tell how many, not which
                settled = TurnStatus.UNCONFIRMED
            if self.ord_numbers == "maybe":
                # A turn was cancelled, and did not reach the server: the SDK may or may not
                # have seen where the cancellation struck, so it may or may not settle.
                got = {t.status for t in self.conv.history if t.text in set(self.pending)}
                assert got in ({settled}, {TurnStatus.UNCONFIRMED})
                (settled,) = got
            for text in self.pending:
                self.status[text] = settled
            TALLY["turns reconciled"] += len(self.pending)
        self.pending = []
        self.ord_numbers = "known"

    def on_server(self, text: str) -> bool:
        return any(
            text in self.emulator.user_messages(conversation.conv_id)
            for conversation in self.emulator.conversations()
        )

    def outcome(self, text: str, result: object) -> None:
        """Update the model with a turn's outcome, checking the outcome itself."""
        assert self.conv is not None
        if isinstance(result, UnconfirmedStartError):
            assert self.conv_id is None
            assert self.pending
        elif isinstance(result, QuickchatError):
            self.rule.check_error(result, type(result))
            TALLY["faults checked"] += 1
            if result.outcome_unknown:
                self.turns.append(text)
                self.status[text] = TurnStatus.UNCONFIRMED
                self.pending.append(text)
        elif result is CANCELLED:
            self.cancelled.add(text)
            # A cancelled message that reached the server shifts ord_number unseen: the next
            # reply can no longer tell whether the pending turns landed.
            if self.on_server(text):
                self.ord_numbers = "broken"
            elif self.ord_numbers == "known":
                self.ord_numbers = "maybe"
            TALLY["faults checked"] += 1
        else:
            self.settle()
            self.turns.append(text)
            self.status[text] = TurnStatus.CONFIRMED
            if self.conv_id is None:
                self.conv_id = self.conv.conv_id

    # --- rules -----------------------------------------------------------------------------

    @initialize(flavor=st.sampled_from(["current", "legacy"]))
    def open(self, flavor: str) -> None:
        self.flavor = flavor
        self.client = self.new_client()
        self.conv = self.client.conversation()

    @rule()
    def say_ok(self) -> None:
        text = self.rule.text("ok")
        self.outcome(text, self.say(text))

    @rule(faults=st.lists(st.sampled_from(FAULTS), min_size=1, max_size=2))
    def say_through_faults(self, faults: list[Fault]) -> None:
        self.emulator.faults.script(faults)
        text = self.rule.text("fault")
        self.outcome(text, self.say(text))

    @rule(late=st.booleans())
    def cancel(self, late: bool) -> None:
        """Cancelled at once, or while the server answers (after it recorded the message)."""
        if late:
            self.emulator.faults.script([LATE])
        text = self.rule.text("cancelled")
        # A turn that never reaches a checkpoint completes all the same; a first turn after an
        # unconfirmed one is refused before it starts.
        self.outcome(text, self.say(text, cancel_after=0.01 if late else 0))

    @rule(restart=st.booleans())
    def snapshot_and_resume(self, restart: bool) -> None:
        """Through JSON, on the same client or (a process restart) on a new one."""
        assert self.conv is not None
        assert self.client is not None
        text = json.dumps(self.conv.snapshot())
        assert_no_secret(text, "a snapshot")
        if restart:
            self.portal.call(self.client.aclose)
            self.client = self.new_client()
        before = self.conv
        self.conv = self.client.resume(json.loads(text))
        assert self.conv.history == before.history
        assert self.conv.unconfirmed == before.unconfirmed
        assert self.conv.conv_id == before.conv_id

    @precondition(lambda self: self.conv is not None and self.conv.conv_id is None)
    @rule()
    def start_over(self) -> None:
        assert self.conv is not None
        self.conv.start_over()
        self.pending = []

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def history_matches_the_model(self) -> None:
        if self.conv is None:
            return
        history = self.conv.history
        assert [turn.text for turn in history] == self.turns
        assert [turn.status for turn in history] == [self.status[t] for t in self.turns]
        assert [turn.text for turn in self.conv.unconfirmed] == self.pending
        for text in (repr(self.conv), repr(self.client)):
            assert_no_secret(text, "a repr")

    @invariant()
    def conv_id_never_changes(self) -> None:
        if self.conv is not None:
            assert self.conv.conv_id == self.conv_id

    @invariant()
    def the_record_agrees(self) -> None:
        if self.conv is None:
            return
        self.rule.check_record()
        history = self.conv.history
        for turn in history:
            assert (turn.reply is not None) is (turn.status is TurnStatus.CONFIRMED)
        if self.conv.conv_id is not None:
            # What the history claims is what the server holds, but for the turns whose
            # outcome is still unknown, and cancelled ones (which the history does not claim).
            server = self.emulator.user_messages(self.conv.conv_id)
            unknown = self.cancelled | {
                t.text for t in history if t.status is TurnStatus.UNCONFIRMED
            }
            claimed = [
                t.text for t in history if t.status in {TurnStatus.CONFIRMED, TurnStatus.LANDED}
            ]
            assert claimed == [text for text in server if text not in unknown]
            for turn in history:
                if turn.status is TurnStatus.NOT_LANDED:
                    assert turn.text not in server
        assert self.client is not None
        self.rule.check_pool(self.client)
        TALLY["stateful steps"] += 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_conversation_invariants(backend):
    """Any sequence of turns, faults, cancellations, snapshots and restarts keeps the rule."""
    machine = type(f"ConversationMachine_{backend}", (ConversationMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=bounded(80, stateful_step_count=15))


def replay(backend: str, *steps: tuple[str, dict[str, object]]) -> None:
    """Run the machine through fixed steps, checking every invariant after each."""
    machine = type(f"ConversationMachine_{backend}", (ConversationMachine,), {"backend": backend})()
    try:
        machine.open(flavor="current")
        for name, kwargs in steps:
            getattr(machine, name)(**kwargs)
            machine.history_matches_the_model()
            machine.conv_id_never_changes()
            machine.the_record_agrees()
    finally:
        machine.teardown()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_replay_cancelled_turn_then_an_ambiguous_one(backend):
    """The run that found the cancelled-turn bug: a later pending turn is not called landed."""
    replay(
        backend,
        ("say_ok", {}),
        ("cancel", {"late": True}),
        ("say_through_faults", {"faults": [Fault("error_before")]}),
        ("say_ok", {}),
    )
