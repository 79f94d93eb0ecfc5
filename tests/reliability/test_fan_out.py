"""Scenario 18: thousands of conversations at once, through faults and cancellations."""

from __future__ import annotations

import random

import anyio
import pytest

from quickchat_async import APIConnectionError, Conversation, QuickchatError, TurnStatus
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from .rule import TALLY, Rule


pytestmark = pytest.mark.anyio

CONVERSATIONS = 2_000
CONNECTIONS = 64


class TestFanOut:
    @pytest.mark.scenario(18)
    async def test_thousands_of_conversations(self, served: Emulator, rule: Rule):
        """2,000 conversations on 64 connections, 10% resets, 5% slow, some cancelled.

        Afterwards no turn waited past its deadline for a connection, every completed turn is
        recorded once, no message twice, and the descriptors are back where they were.
        """
        served.faults.set_rates(
            {Fault("reset_mid_body"): 0.10, Fault("slow_headers", delay=0.05): 0.05}, seed=18
        )
        draw = random.Random(18)  # noqa: S311 -- reproducible, not secret
        done: dict[int, str] = {}
        failed: dict[int, QuickchatError] = {}
        cancelled: set[int] = set()

        async def turn(i: int, conv: Conversation, cancel_after: float | None) -> None:
            with anyio.CancelScope() as scope:
                if cancel_after is not None:
                    scope.deadline = anyio.current_time() + cancel_after
                try:
                    await conv.say(f"fan-out {i}")
                    done[i] = "ok"
                except QuickchatError as exc:
                    failed[i] = exc
            if scope.cancelled_caught:
                cancelled.add(i)

        async with rule.client(max_connections=CONNECTIONS, timeout=30) as client:
            convs = [client.conversation() for _ in range(CONVERSATIONS)]
            async with anyio.create_task_group() as tg:
                for i, conv in enumerate(convs):
                    cancel_after = draw.uniform(0, 0.5) if draw.random() < 0.05 else None
                    tg.start_soon(turn, i, conv, cancel_after)
            rule.check_pool(client)
            assert client.transport.peak == CONNECTIONS  # type: ignore[attr-defined]

            assert len(done) + len(failed) + len(cancelled) == CONVERSATIONS
            for exc in failed.values():  # only the resets; no turn timed out waiting for a slot
                rule.check_error(exc, APIConnectionError, outcome_unknown=True)
            recorded = {
                text: served.conversation(c.conv_id).conv_id
                for c in served.conversations()
                for text in served.user_messages(c.conv_id)
            }
            for i in done:
                assert recorded[f"fan-out {i}"] == convs[i].conv_id
            for i in failed:
                (turn_,) = convs[i].history
                assert turn_.status is TurnStatus.UNCONFIRMED
            rule.check_record()
            assert len(served.conversations()) <= CONVERSATIONS
            assert done
            assert failed
            assert cancelled

            # Every conversation that has its conv_id goes on.
            served.faults.clear()
            for i in list(done)[:20]:
                await rule.check_next_turn(convs[i])
                rule.check_history(convs[i])

        TALLY["fan-out turns"] += CONVERSATIONS
        TALLY["faults checked"] += len(failed) + len(cancelled)
