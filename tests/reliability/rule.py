"""The rule every reliability scenario checks, in one place, and the suite's tally.

After each fault:

1. the emulator's record holds at most one copy of each user message;
2. the conversation's local history equals the turns the server confirmed to it (turns whose
   outcome was unknown are kept, marked, and settled by the next reply);
3. no request is left in the client's transport, the client holds no more connections than it
   ever had requests in flight, and (at the end of the test) no file descriptor leaked;
4. the next turn succeeds;
5. the error raised is the documented type, with a useful message and no credential in it.

Every test message is unique (`Rule.text()`), so "one copy" can be checked by text.

Part 3 reads no private state of the SDK or of any HTTP library. Clients made by
`Rule.client()` send through a `CountingTransport` (tests/conftest.py): a public `Transport`
wrapped around the real one, which counts the requests handed to it and not yet returned, and
the most it ever had at once. The connections themselves are read from the operating system:
this process's established TCP sockets to the emulator's port (`/proc/net/tcp`), and its file
descriptors (`/proc/self/fd`).
"""

from __future__ import annotations

import collections
import itertools
import logging
import pathlib
import re
import traceback
from collections.abc import Iterable
from typing import Any

import anyio

from quickchat_async import (
    AiohttpTransport,
    APIConnectionError,
    APIStatusError,
    AsyncQuickchat,
    Conversation,
    Httpx2Transport,
    HttpxTransport,
    QuickchatError,
    Reply,
    Transport,
    TurnStatus,
    UnexpectedResponseError,
)
from quickchat_async.testing import Emulator
from tests.conftest import API_KEY, SECRETS, TOKEN, CountingTransport


__all__ = ["API_KEY", "SECRETS", "TALLY", "TOKEN", "Rule"]

#: What the suite counted, written out by the conftest at the end of the session.
TALLY: collections.Counter[str] = collections.Counter()

#: The state of an established TCP connection in /proc/net/tcp.
_ESTABLISHED = "01"


def open_fds() -> int:
    """How many file descriptors this process has open (Linux)."""
    return sum(1 for _ in pathlib.Path("/proc/self/fd").iterdir())


def connections_to(port: int) -> set[int]:
    """The local ports of this process's established TCP connections to `port` (Linux).

    The operating system's own view: /proc/net/tcp{,6} lists every socket of the network
    namespace with its inode, and /proc/self/fd says which of those inodes are this process's.
    """
    ours = set()
    for fd in pathlib.Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:  # closed meanwhile
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            ours.add(match[1])
    local_ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == _ESTABLISHED and int(remote.rsplit(":")[1], 16) == port and inode in ours:
                local_ports.add(int(local.rsplit(":")[1], 16))
    return local_ports


def port_of(emulator: Emulator) -> int:
    """The loopback port a served emulator listens on."""
    return int(emulator.base_url.rsplit(":", 1)[1])


def assert_no_secret(text: str, where: str) -> None:
    """Neither test credential appears in `text`."""
    for secret in SECRETS:
        assert secret not in text, f"a credential leaked into {where}"


def formatted_with_locals(exc: BaseException) -> str:
    """`exc` and its chain formatted with every frame's local variables, as rich or Sentry do.

    The tests' own frames are left out: they hold what the tests sent and received, credentials
    included. Everything else (the SDK, httpx2, httpcore2, anyio, stamina) must not.
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


class Rule:
    """Checks the rule every scenario checks, against one emulator (served, or in process).

    Args:
        emulator: the emulator the scenario talks to.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.fds_at_start = open_fds()
        self._numbers = itertools.count(1)
        self._seams: list[CountingTransport] = []

    def text(self, label: str = "msg") -> str:
        """A user message no other turn of the session sends."""
        return f"{label} #{next(self._numbers)}"

    def client(
        self,
        *,
        flavor: str = "current",
        http_client: Any = None,
        transport: str | Transport | None = None,
        **options: Any,
    ) -> AsyncQuickchat:
        """A client of the emulator's scenario whose transport is watched (`CountingTransport`).

        Args:
            flavor: "current" (the test token) or "legacy" (the test api_key).
            http_client: an httpx2 client to send through (the caller closes it).
            transport: the engine's name, or a transport, when served; in process, the
                emulator's own httpx2 transport is always used.
            **options: any other `AsyncQuickchat` option; they win over the defaults.
        """
        emulator = self.emulator
        max_connections = options.get("max_connections", 100)
        inner: Transport
        if http_client is not None:
            inner = Httpx2Transport(http_client)
        elif not emulator.served:
            inner = Httpx2Transport(emulator.http_client(), close_client=True)
        elif transport is None or transport == "httpx2":
            inner = Httpx2Transport(max_connections=max_connections)
        elif transport == "httpx":
            inner = HttpxTransport(max_connections=max_connections)
        elif transport == "aiohttp":
            inner = AiohttpTransport(max_connections=max_connections)
        else:
            assert not isinstance(transport, str)
            inner = transport
        seam = CountingTransport(inner)
        self._seams.append(seam)
        credential = (
            {"token": emulator.token} if flavor == "current" else {"api_key": emulator.api_key}
        )
        settings = {
            "scenario_id": emulator.scenario_id,
            "base_url": emulator.base_url,
            **credential,
            **options,
        }
        return AsyncQuickchat(transport=seam, **settings)

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
        """No request left in the transport; no more connections than requests ever in flight.

        A connection the HTTP engine leaked as busy cannot serve the next request, so that
        request opens another: this process then holds more connections to the emulator than
        its clients ever had requests in flight at once.
        """
        seam = client.transport
        assert isinstance(seam, CountingTransport), "make the client with Rule.client()"
        assert seam.in_flight == 0, f"{seam.in_flight} request(s) still in the transport"
        if self.emulator.served:
            held = connections_to(port_of(self.emulator))
            most = sum(made.peak for made in self._seams)
            assert len(held) <= most, f"{len(held)} connections for {most} requests at most"

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
        with anyio.fail_after(10):  # a turn lock or a connection left held would hang here
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
