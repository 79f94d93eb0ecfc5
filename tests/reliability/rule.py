"""The rule every reliability scenario checks, in one place, and the suite's tally.

After each fault:

1. the emulator's record holds at most one copy of each user message;
2. the conversation's local history equals the turns the server confirmed to it (turns whose
   outcome was unknown are kept, marked, and settled by the next reply);
3. the connection pool is back to no active connection, and (at the end of the test) no file
   descriptor leaked;
4. the next turn succeeds;
5. the error raised is the documented type, with a useful message and no credential in it.

Every test message is unique (`Rule.text()`), so "one copy" can be checked by text.
"""

from __future__ import annotations

import collections
import itertools
import logging
import pathlib
import re
import traceback
from collections.abc import Iterable

import anyio
import httpcore

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    AsyncQuickchat,
    Conversation,
    HttpxTransport,
    QuickchatError,
    Reply,
    TurnStatus,
    UnexpectedResponseError,
)
from quickchat_async.testing import Emulator


#: Credentials of the canary scenario every reliability test talks to: distinctive, so a leak
#: anywhere (a log line, a repr, a traceback) is found by a plain substring search.
TOKEN = "tok-CANARY-reliability-93b1e7"
API_KEY = "key-CANARY-reliability-0c4f28"
SECRETS = (TOKEN, API_KEY)

#: What the suite counted, written out by the conftest at the end of the session.
TALLY: collections.Counter[str] = collections.Counter()


def open_fds() -> int:
    """How many file descriptors this process has open (Linux)."""
    return sum(1 for _ in pathlib.Path("/proc/self/fd").iterdir())


def assert_no_secret(text: str, where: str) -> None:
    """Neither canary credential appears in `text`."""
    for secret in SECRETS:
        assert secret not in text, f"a credential leaked into {where}"


def formatted_with_locals(exc: BaseException) -> str:
    """`exc` and its chain formatted with every frame's local variables, as rich or Sentry do.

    The tests' own frames are left out: they hold what the tests sent and received, credentials
    included. Everything else (the SDK, httpx, httpcore, anyio, stamina) must not.
    """
    te = traceback.TracebackException.from_exception(exc, capture_locals=True)
    te.stack = traceback.StackSummary.from_list(
        [frame for frame in te.stack if "/tests/" not in frame.filename]
    )
    chained = te
    while (chained := chained.__cause__ or chained.__context__) is not None:
        chained.stack = traceback.StackSummary.from_list(
            [frame for frame in chained.stack if "/tests/" not in frame.filename]
        )
    return "".join(te.format())


def check_log_records(records: list[logging.LogRecord]) -> None:
    """No record holds a credential: message, arguments, extra fields, exception with locals."""
    for record in records:
        where = f"the log record {record.name}:{record.lineno}"
        assert_no_secret(record.getMessage(), where)
        assert_no_secret(repr(vars(record)), where)
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_secret(formatted_with_locals(record.exc_info[1]), where)
    TALLY["log records checked"] += len(records)


def pool_of(client: AsyncQuickchat) -> httpcore.AsyncConnectionPool | None:
    """The httpcore connection pool behind a client on the httpx transport, if it has one."""
    transport = client.transport
    if not isinstance(transport, HttpxTransport):
        return None
    pool = getattr(transport.client._transport, "_pool", None)
    return pool if isinstance(pool, httpcore.AsyncConnectionPool) else None


def busy_connections(client: AsyncQuickchat) -> list[str]:
    """What is still active in a client: borrowed slots, queued requests, busy connections."""
    busy: list[str] = []
    borrowed = client._limiter.in_use
    if borrowed:
        busy.append(f"{borrowed} connection slot(s) borrowed")
    pool = pool_of(client)
    if pool is not None:
        busy.extend(f"queued request {r!r}" for r in pool._requests)
        busy.extend(
            f"active connection {c!r}"
            for c in pool.connections
            if not (c.is_idle() or c.is_closed())
        )
    return busy


class Rule:
    """Checks the rule every scenario checks, against one served emulator.

    Args:
        emulator: the served emulator the scenario talks to.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.fds_at_start = open_fds()
        self._numbers = itertools.count(1)

    def text(self, label: str = "msg") -> str:
        """A user message no other turn of the session sends."""
        return f"{label} #{next(self._numbers)}"

    # --- the five parts of the rule ---------------------------------------------------------

    def check_error(
        self,
        exc: BaseException,
        expected: type[QuickchatError],
        *,
        outcome_unknown: bool | None = None,
        match: str | None = None,
    ) -> None:
        """The documented type (exactly), a message that says what happened, no credential."""
        assert type(exc) is expected, f"expected {expected.__name__}, got {exc!r}"
        assert isinstance(exc, QuickchatError)
        message = str(exc)
        assert message == exc.message
        assert len(message) >= 40, f"not a useful message: {message!r}"
        if isinstance(exc, APIConnectionError):
            assert exc.url, "a connection error names the URL"
            assert exc.url in message
        if isinstance(exc, (APIStatusError, UnexpectedResponseError)):
            assert str(exc.status_code) in message, "a status error names the status"
        if match is not None:
            assert re.search(match, message), f"{match!r} not in {message!r}"
        if outcome_unknown is not None:
            assert exc.outcome_unknown is outcome_unknown
        assert_no_secret(message, "the error message")
        assert_no_secret(repr(exc), "the error's repr")
        assert_no_secret(formatted_with_locals(exc), "the traceback with locals")
        TALLY["errors checked"] += 1

    def check_pool(self, client: AsyncQuickchat) -> None:
        """No slot borrowed, no request queued, no connection busy."""
        assert busy_connections(client) == []

    def check_record(self) -> None:
        """At most one copy of each user message, across every recorded conversation."""
        copies = collections.Counter(
            message
            for conversation in self.emulator.conversations()
            for message in self.emulator.user_messages(conversation.conv_id)
        )
        duplicates = {text: n for text, n in copies.items() if n > 1}
        TALLY["duplicates found"] += sum(n - 1 for n in duplicates.values())
        TALLY["user messages checked"] += len(copies)
        assert not duplicates, f"duplicated on the server: {duplicates}"

    def check_history(self, conv: Conversation, *, unsent: Iterable[str] = ()) -> None:
        """Local history agrees with the server's record of the conversation.

        Confirmed and landed turns, in order, are exactly the user messages the server holds
        (except `unsent`: messages of cancelled turns that reached the server although no
        reply did, which the conversation does not claim); not-landed turns are not there.
        """
        if conv.conv_id is None:
            assert all(t.status is not TurnStatus.CONFIRMED for t in conv.history)
            return
        server = [m for m in self.emulator.user_messages(conv.conv_id) if m not in set(unsent)]
        claimed = [
            t.text for t in conv.history if t.status in {TurnStatus.CONFIRMED, TurnStatus.LANDED}
        ]
        if conv.max_history is None:
            assert claimed == server
        else:
            assert claimed == server[len(server) - len(claimed) :]
        for turn in conv.history:
            if turn.status is TurnStatus.NOT_LANDED:
                assert turn.text not in server
            assert (turn.reply is not None) is (turn.status is TurnStatus.CONFIRMED)

    async def check_next_turn(self, conv: Conversation) -> Reply:
        """The conversation goes on: the next turn succeeds, and is recorded once."""
        text = self.text("next")
        reply = await conv.say(text)
        assert reply.text
        assert conv.conv_id == reply.conv_id
        assert conv.history[-1].text == text
        assert conv.history[-1].status is TurnStatus.CONFIRMED
        assert self.emulator.user_messages(reply.conv_id).count(text) == 1
        return reply

    # --- all together ----------------------------------------------------------------------

    async def after_fault(
        self,
        client: AsyncQuickchat,
        conv: Conversation,
        exc: BaseException,
        expected: type[QuickchatError],
        *,
        outcome_unknown: bool | None = None,
        match: str | None = None,
        landed: bool | None = None,
    ) -> None:
        """Apply the whole rule after `conv`'s last turn failed with `exc`.

        Args:
            client: the client `conv` talks through.
            conv: the conversation whose turn failed (it must have started already).
            exc: what the failed turn raised.
            expected: the documented exception type.
            outcome_unknown: what `exc.outcome_unknown` must be, if given.
            match: a regular expression the message must match.
            landed: for an ambiguous turn, whether the next reply must show it landed.
        """
        self.check_error(exc, expected, outcome_unknown=outcome_unknown, match=match)
        self.check_pool(client)
        failed = conv.history[-1] if conv.history else None
        if isinstance(exc, QuickchatError) and exc.outcome_unknown:
            assert failed is not None
            assert failed.status is TurnStatus.UNCONFIRMED
            assert failed.reply is None
            assert type(exc).__name__ in (failed.error or "")
        await self.check_next_turn(conv)
        self.check_pool(client)
        if landed is not None:
            assert failed is not None
            want = TurnStatus.LANDED if landed else TurnStatus.NOT_LANDED
            assert conv.history[-2].status is want
        assert conv.unconfirmed == ()
        self.check_record()
        self.check_history(conv)
        TALLY["faults checked"] += 1

    async def check_fds(self, *, within: float = 5.0) -> None:
        """Every descriptor opened since the start is closed again (the server may lag)."""
        with anyio.move_on_after(within):
            while open_fds() > self.fds_at_start:  # noqa: ASYNC110 -- polling the OS
                await anyio.sleep(0.02)
        assert open_fds() <= self.fds_at_start, "file descriptors leaked"
