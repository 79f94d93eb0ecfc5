"""Faults over real loopback sockets: each ends in a documented error, nothing lost or duplicated.

Every test talks to the emulator served by uvicorn on 127.0.0.1 (or, where a fault cannot be
made on a real socket, through a transport wrapped around the real one), then applies the rule
every scenario checks (`rule.Rule`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.abc
import anyio.lowlevel
import httpx2
import pytest
import stamina
import stamina.instrumentation
from anyio.abc import SocketAttribute

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatRequest,
    ConversationNotFoundError,
    HTTPResponse,
    InternalServerError,
    QuickchatError,
    RateLimitError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    Timeout,
    TurnStatus,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
)
from quickchat_async._wire import retry_delay
from quickchat_async.emulator import ErrorText, Fault, FaultKind
from quickchat_async.testing import Emulator

from .rule import TALLY, TOKEN, Rule, assert_no_secret, connections_to, port_of


pytestmark = pytest.mark.anyio

#: Short deadlines, so slow faults end quickly.
QUICK = Timeout(total=0.3, connect=0.3)
#: A small body limit, so oversized and endless bodies end quickly.
SMALL_BODY = 64 * 1024


# --- the ambiguous turn: every fault kind, and what the next reply says of it -------------------

#: kind -> (fault, exception, whether the turn landed, scenario)
AMBIGUOUS = {
    FaultKind.ERROR_BEFORE: (Fault("error_before"), InternalServerError, False, 11),
    FaultKind.DROP_BEFORE: (Fault("drop_before"), APIConnectionError, False, 4),
    FaultKind.HTML_502: (Fault("html_502"), InternalServerError, False, 9),
    FaultKind.ERROR_AFTER: (Fault("error_after"), InternalServerError, True, 11),
    FaultKind.DROP_AFTER: (Fault("drop_after"), APIConnectionError, True, 4),
    FaultKind.TRUNCATED: (Fault("truncated"), APIConnectionError, True, 6),
    FaultKind.RESET_MID_BODY: (Fault("reset_mid_body"), APIConnectionError, True, 6),
    FaultKind.NOT_JSON: (Fault("not_json"), UnexpectedResponseError, True, 8),
    FaultKind.MISSING_REPLY: (Fault("missing_reply"), UnexpectedResponseError, True, 8),
    FaultKind.SLOW_HEADERS: (Fault("slow_headers", delay=1.0), APITimeoutError, True, 7),
    FaultKind.DRIP: (Fault("drip", interval=0.05), APITimeoutError, True, 7),
    FaultKind.HUGE_BODY: (Fault("huge_body", size=4 * SMALL_BODY), ResponseTooLargeError, True, 13),
    FaultKind.ENDLESS: (Fault("endless", interval=0.001), ResponseTooLargeError, True, 13),
}
#: What the message of each family says.
MESSAGES = {
    InternalServerError: r"server error \(50[02]",
    APIConnectionError: "lost the connection",
    UnexpectedResponseError: "answered 200 but its body",
    APITimeoutError: "per-attempt deadline",
    ResponseTooLargeError: "larger than max_response_bytes",
}


def ambiguous_params() -> list[object]:
    return [
        pytest.param(kind, marks=pytest.mark.scenario(scenario), id=kind.value)
        for kind, (_, _, _, scenario) in AMBIGUOUS.items()
    ]


class TestAmbiguousTurn:
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    @pytest.mark.parametrize("kind", ambiguous_params())
    async def test_every_fault(self, served: Emulator, rule: Rule, kind, flavor):
        """A turn without a reply is kept unconfirmed, not resent; the next reply settles it."""
        fault, error, landed, _ = AMBIGUOUS[kind]
        client = rule.client(
            flavor=flavor, timeout=QUICK, max_response_bytes=SMALL_BODY, max_retries=2
        )
        async with client:
            conv = client.conversation()
            await conv.say(rule.text())
            served.faults.script([fault])
            requests = served.stats().requests

            with anyio.fail_after(5), pytest.raises(QuickchatError) as info:
                await conv.say(rule.text("ambiguous"))

            assert served.stats().requests == requests + 1, "an ambiguous turn is not resent"
            await rule.after_fault(
                client,
                conv,
                info.value,
                error,
                outcome_unknown=True,
                match=MESSAGES[error],
                landed=landed,
            )
            assert served.stats().by_fault[kind.value] == 1

    @pytest.mark.scenario(17)
    @pytest.mark.scenario(8)
    @pytest.mark.parametrize(
        "kind", ["not_json", "missing_reply", "drop_after", "drop_before", "slow_headers"]
    )
    async def test_first_turn(self, served: Emulator, rule: Rule, kind):
        """An ambiguous first turn adopts no conv_id and never opens a second conversation."""
        fault, error, landed, _ = AMBIGUOUS[FaultKind(kind)]
        served.faults.script([fault])
        async with rule.client(timeout=QUICK) as client:
            conv = client.conversation()
            with anyio.fail_after(5), pytest.raises(QuickchatError) as info:
                await conv.say(rule.text("first"))
            rule.check_error(info.value, error, outcome_unknown=True)
            rule.check_pool(client)
            assert conv.conv_id is None
            assert len(served.conversations()) == int(landed)

            with pytest.raises(UnconfirmedStartError, match="start_over"):
                await conv.say(rule.text("again"))
            assert len(served.conversations()) == int(landed)
            assert served.stats().requests == 1

            conv.start_over()
            reply = await rule.check_next_turn(conv)

            assert len(served.conversations()) == int(landed) + 1
            assert [t.status for t in conv.history] == [
                TurnStatus.UNCONFIRMED,
                TurnStatus.CONFIRMED,
            ]
            assert reply.conv_id == conv.conv_id
            rule.check_record()
            rule.check_history(conv)


# --- 1, 2, 3, 5: connections -------------------------------------------------------------------


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A listening port whose accept queue is full: connecting to it times out (no RST)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # Linux queues backlog + 1 connection, then drops SYNs
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


class ConnectTimeoutFirst(httpx2.AsyncBaseTransport):
    """httpx2's own transport, except that the first `times` connections time out."""

    def __init__(self, times: int) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.left = times

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.left:
            self.left -= 1
            raise httpx2.ConnectTimeout("timed out", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class StallingTransport:
    """A transport whose first request stalls the whole event loop (a blocking call in it)."""

    def __init__(self) -> None:
        self.sent = 0
        self.started = anyio.Event()

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        self.sent += 1
        if self.sent == 1:
            self.started.set()
            await anyio.sleep(0.05)
            time.sleep(0.4)  # noqa: ASYNC251 -- the stall is the point: deadlines pass unseen
        body = {"conv_id": "c-1", "reply": "Hi!", "ord_number": 1 + 2 * self.sent}
        return HTTPResponse(200, {}, json.dumps(body).encode())

    async def aclose(self) -> None:
        pass


class TestConnections:
    @pytest.mark.scenario(1)
    async def test_connection_refused(self, served: Emulator, rule: Rule, caplog):
        """Nobody listening: bounded retries, then APIConnectionError; the server saw nothing."""
        async with rule.client(max_retries=2) as client:
            conv = client.conversation()
            await conv.say(rule.text())
            port = port_of(served)
            await served.stop()
            requests = served.stats().requests

            with (
                caplog.at_level(logging.INFO, logger="quickchat_async"),
                pytest.raises(APIConnectionError) as info,
            ):
                await conv.say(rule.text("refused"))

            assert [
                r.message
                for r in caplog.records
                if r.name == "quickchat_async" and r.levelno >= logging.INFO
            ] == [
                f"Retrying the Chat request to {client.base_url}/chat (attempt {n} of 3) "
                "after APIConnectionError"
                for n in (2, 3)
            ]
            assert served.stats().requests == requests
            assert [t.text for t in conv.history] == [conv.history[0].text]
            await served.start(port=port)
            await rule.after_fault(
                client, conv, info.value, APIConnectionError, outcome_unknown=False,
                match="could not connect .* The message was not sent",
            )  # fmt: skip

    @pytest.mark.scenario(2)
    async def test_connect_timeout_on_a_real_socket(self, served: Emulator, rule: Rule, caplog):
        """A connection that cannot be opened in time: retried, then APITimeoutError, unsent."""
        with blackhole() as port:
            client = rule.client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=Timeout(total=5, connect=0.1),
                max_retries=1,
            )
            async with client:
                with (
                    caplog.at_level(logging.INFO, logger="quickchat_async"),
                    anyio.fail_after(5),
                    pytest.raises(APITimeoutError) as info,
                ):
                    await client.say(rule.text("blackholed"))
                rule.check_error(
                    info.value, APITimeoutError, outcome_unknown=False, match="timed out connecting"
                )
                rule.check_pool(client)

        retries = [
            r for r in caplog.records if r.name == "quickchat_async" and r.levelno >= logging.INFO
        ]
        assert len(retries) == 1
        assert served.conversations() == ()

    @pytest.mark.scenario(2)
    async def test_connect_timeout_retried_and_delivered_once(self, served: Emulator, rule: Rule):
        """Connect timeouts are retried, and the turn is delivered exactly once."""
        async with (
            httpx2.AsyncClient(transport=ConnectTimeoutFirst(times=2)) as http,
            rule.client(http_client=http, max_retries=2) as client,
        ):
            conv = client.conversation()
            text = rule.text("after two connect timeouts")

            await conv.say(text)

            assert served.user_messages(conv.conv_id) == (text,)
            assert served.stats().requests == 1
            rule.check_pool(client)
            await rule.check_next_turn(conv)
            rule.check_history(conv)

    @pytest.mark.scenario(3)
    async def test_pool_saturated_callers_wait(self, served: Emulator, rule: Rule):
        """More turns than connections on a slow server: all wait their turn, none is resent."""
        served.service.latency = 0.05
        async with rule.client(max_connections=2, timeout=10) as client:
            convs = [client.conversation() for _ in range(10)]
            async with anyio.create_task_group() as tg:
                for conv in convs:
                    tg.start_soon(conv.say, rule.text("waits"))

            assert client.transport.peak == 2  # type: ignore[attr-defined]
            assert len(connections_to(port_of(served))) <= 2
            assert served.stats().requests == 10
            for conv in convs:
                rule.check_history(conv)
            rule.check_pool(client)
            rule.check_record()
            served.service.latency = 0
            await rule.check_next_turn(convs[0])

    @pytest.mark.scenario(3)
    async def test_pool_saturated_past_the_deadline(self, served: Emulator, rule: Rule):
        """Turns that cannot get a connection in time fail unsent; sent ones land once."""
        async with rule.client(max_connections=1, timeout=0.5, max_retries=0) as client:
            # Warm up (the connection, lazy imports), so the first turn's time is the latency.
            await client.say(rule.text("warm-up"))
            served.service.latency = 0.2
            convs = [client.conversation() for _ in range(6)]
            outcomes: dict[int, BaseException | None] = {}

            async def turn(i: int) -> None:
                try:
                    await convs[i].say(f"turn {i}")
                    outcomes[i] = None
                except APITimeoutError as exc:
                    outcomes[i] = exc

            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(turn, i)

            on_server = {t for c in served.conversations() for t in served.user_messages(c.conv_id)}
            kinds = set()
            for i, exc in outcomes.items():
                if exc is None:
                    kinds.add("ok")
                    assert f"turn {i}" in on_server
                elif "connection slots" in str(exc):
                    kinds.add("slot")
                    rule.check_error(exc, APITimeoutError, outcome_unknown=False)
                    assert f"turn {i}" not in on_server
                else:  # the deadline ran out after the wait: maybe sent, maybe not yet
                    rule.check_error(exc, APITimeoutError, match="per-attempt deadline")
                    if not exc.outcome_unknown:
                        assert f"turn {i}" not in on_server
            assert {"ok", "slot"} <= kinds
            rule.check_record()
            rule.check_pool(client)
            served.service.latency = 0
            # A conversation whose turn went through (trio starts the tasks in any order, so
            # the first one's turn may be the one that timed out, ambiguously).
            ok = next(i for i, exc in outcomes.items() if exc is None)
            await rule.check_next_turn(convs[ok])

    @pytest.mark.scenario(3)
    async def test_slot_granted_as_the_deadline_ran_out(self, rule: Rule):
        """A slot that frees only after the waiter's deadline is not used: the turn fails unsent."""
        transport = StallingTransport()
        client = rule.client(transport=transport, max_connections=1, timeout=0.3, max_retries=0)
        errors: list[APITimeoutError] = []

        async def second() -> None:
            try:
                await client.say(rule.text("second"))
            except APITimeoutError as exc:
                errors.append(exc)

        async with client, anyio.create_task_group() as tg:
            tg.start_soon(client.say, rule.text("first"))
            await transport.started.wait()
            tg.start_soon(second)

        (error,) = errors
        rule.check_error(error, APITimeoutError, outcome_unknown=False, match="connection slots")
        assert transport.sent == 1
        rule.check_pool(client)

    @pytest.mark.scenario(5)
    async def test_stale_keep_alive_connection(self, served: Emulator, rule: Rule):
        """A kept-alive connection the server closed is replaced, not reused or resent."""
        async with rule.client() as client:
            conv = client.conversation()
            await conv.say(rule.text())
            port = port_of(served)
            for _ in range(3):
                (stale,) = connections_to(port)  # the kept-alive connection, by its local port
                await served.stop()  # closes its side of the idle connection
                await served.start(port=port)

                await rule.check_next_turn(conv)

                (fresh,) = connections_to(port)
                assert fresh != stale
            assert served.stats().requests == 4
            rule.check_record()
            rule.check_history(conv)
            rule.check_pool(client)


# --- 10, 11: retries ---------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(when, usegmt=True)


RETRY_AFTERS = [
    pytest.param("2", 2.0, id="seconds"),
    pytest.param("date", 30.0, id="http-date"),
    pytest.param("soon", None, id="garbage"),
    pytest.param("-5", None, id="negative"),
    pytest.param(None, None, id="absent"),
]


class TestRetries:
    @pytest.mark.scenario(10)
    @pytest.mark.parametrize("kind", ["rate_limit", "unavailable"])
    @pytest.mark.parametrize(("header", "seconds"), RETRY_AFTERS)
    async def test_retry_after_within_the_cap(self, served, rule, kind, header, seconds):
        """A 429 or 503 asking for at most 60 s is retried; garbage Retry-After is ignored."""
        value = http_date(30) if header == "date" else header
        served.faults.script([Fault(kind, retry_after=value), Fault(kind, retry_after=value)])
        async with rule.client(max_retries=0) as once, rule.client() as client:
            with pytest.raises((RateLimitError, ServiceUnavailableError)) as info:
                await once.say(rule.text("not retried"))
            wait = retry_delay(info.value, retry_ambiguous=False)
            if seconds is None:
                assert info.value.retry_after is None
                assert wait is True  # the usual exponential backoff
            else:
                assert info.value.retry_after == wait
                assert isinstance(wait, float)
                assert seconds - 2 < wait <= seconds
            rule.check_error(info.value, type(info.value), outcome_unknown=False)

            conv = client.conversation()
            await conv.say(rule.text("retried"))

            assert served.stats().requests == 3
            rule.check_record()
            rule.check_history(conv)
            rule.check_pool(client)
            await rule.check_next_turn(conv)

    @pytest.mark.scenario(10)
    @pytest.mark.parametrize(
        ("kind", "error"),
        [("rate_limit", RateLimitError), ("unavailable", ServiceUnavailableError)],
    )
    @pytest.mark.parametrize("header", ["3600", "date"])
    async def test_huge_retry_after_raises_at_once(self, served, rule, kind, error, header):
        """A 429 or 503 asking for more than 60 s raises at once, saying how long."""
        value = http_date(7200) if header == "date" else header
        async with rule.client() as client:
            conv = client.conversation()
            await conv.say(rule.text())
            served.faults.script([Fault(kind, retry_after=value)])

            with pytest.raises(error) as info:
                await conv.say(rule.text("not retried"))

            assert served.stats().requests == 2
            assert info.value.retry_after is not None
            assert info.value.retry_after > 3000
            await rule.after_fault(
                client, conv, info.value, error, outcome_unknown=False, match="asked to wait"
            )

    @pytest.mark.scenario(10)
    @pytest.mark.parametrize(("header", "low", "high"), [("0.2", 0.2, 0.3), ("date", 0.0, 1.0)])
    async def test_retry_after_is_honoured(self, served, rule, header, low, high):
        """The SDK really sleeps what Retry-After asks (stamina's test mode off)."""
        value = http_date(1) if header == "date" else header
        served.faults.script([Fault("rate_limit", retry_after=value)])
        waits: list[float] = []
        hooks = stamina.instrumentation.get_on_retry_hooks()
        stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
        try:
            with stamina.set_testing(False):
                async with rule.client() as client:
                    conv = client.conversation()
                    started = anyio.current_time()
                    await conv.say(rule.text("honoured"))
                    elapsed = anyio.current_time() - started
        finally:
            stamina.instrumentation.set_on_retry_hooks(hooks)

        (wait,) = waits
        assert low <= wait <= high
        assert elapsed >= wait
        assert served.stats().requests == 2
        rule.check_history(conv)

    @pytest.mark.scenario(11)
    async def test_retry_ambiguous_trade_off(self, served: Emulator, rule: Rule):
        """With retry_ambiguous=True, a 500 is resent: delivered, at the cost of a duplicate."""
        async with rule.client(retry_ambiguous=True) as client:
            conv = client.conversation()
            await conv.say(rule.text())
            served.faults.script(["error_before"])
            before = rule.text("500 before recording")
            await conv.say(before)
            served.faults.script(["error_after"])
            after = rule.text("500 after recording")
            await conv.say(after)

            on_server = served.user_messages(conv.conv_id)
            assert on_server.count(before) == 1  # the retry delivered it
            assert on_server.count(after) == 2  # the documented cost: a duplicate
            assert [t.status for t in conv.history] == [TurnStatus.CONFIRMED] * 3
            rule.check_pool(client)
        served.reset()  # the duplicate was the point; the rule's final check must not see it


# --- 12: error texts ---------------------------------------------------------------------------


class TestErrorTexts:
    @pytest.mark.scenario(12)
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    @pytest.mark.parametrize(
        ("setup", "errors"),
        [
            pytest.param("bad-credential", (AuthenticationError, AuthenticationError), id="auth"),
            pytest.param("bad-scenario", (ScenarioNotFoundError, AuthenticationError), id="scn"),
            pytest.param(
                "bad-conv-id", (ConversationNotFoundError, ConversationNotFoundError), id="conv"
            ),
        ],
    )
    async def test_server_texts(self, served: Emulator, rule: Rule, flavor, setup, errors):
        """Each 400/401/404 the emulator sends maps to its exception, and is never retried."""
        error = errors[flavor == "legacy"]
        options = {
            "bad-credential": {"token" if flavor == "current" else "api_key": "wrong-9d3"},
            "bad-scenario": {"scenario_id": "no-such-scenario"},
            "bad-conv-id": {},
        }[setup]
        async with rule.client(flavor=flavor, **options) as client:
            conv = client.conversation(conv_id="no-such-conv" if setup == "bad-conv-id" else None)
            with pytest.raises(error) as info:
                await conv.say(rule.text("refused"))
            rule.check_error(info.value, error, outcome_unknown=False)
            assert served.stats().requests == 1
            assert conv.history == ()
            assert conv.unconfirmed == ()
            rule.check_pool(client)
        async with rule.client(flavor=flavor) as client:
            await rule.check_next_turn(client.conversation())

    @pytest.mark.scenario(12)
    @pytest.mark.parametrize(
        ("status", "text", "error"),
        [
            (400, ErrorText.MISSING_SCENARIO_ID, BadRequestError),
            (400, ErrorText.MISSING_TEXT, BadRequestError),
            (400, ErrorText.NOT_AUTHENTICATED, AuthenticationError),
            (400, ErrorText.CONV_ID_NOT_VALID.format(conv_id="c-9"), ConversationNotFoundError),
            (404, ErrorText.NO_SCENARIO.format(scenario_id="s-9"), ScenarioNotFoundError),
            (400, ErrorText.MESSAGE_CONTEXT_TOO_LONG, BadRequestError),
            (400, ErrorText.LEGACY_MISSING_PARAMETERS, BadRequestError),
            (
                400,
                ErrorText.LEGACY_CONV_ID_NOT_FOUND.format(conv_id="c-9"),
                ConversationNotFoundError,
            ),
            (400, ErrorText.LEGACY_MESSAGE_CONTEXT_TOO_LONG, BadRequestError),
            (401, ErrorText.UNAUTHORIZED, AuthenticationError),
            (400, ErrorText.TOO_MANY_METADATA_KEYS, BadRequestError),
            (400, ErrorText.INVALID_JSON, BadRequestError),
            (400, ErrorText.BODY_NOT_AN_OBJECT, BadRequestError),
            (400, ErrorText.WRONG_TYPE.format(name="text", expected="a string"), BadRequestError),
        ],
    )
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_every_documented_text(self, rule: Rule, status, text, error, flavor):
        """Texts the SDK's own checks never let it provoke map right too (mock transport)."""
        calls: list[httpx2.Request] = []

        def answer(request: httpx2.Request) -> httpx2.Response:
            calls.append(request)
            return httpx2.Response(status, text=text, headers={"retry-after": "1"})

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
            client = rule.client(flavor=flavor, http_client=http)
            with pytest.raises(error) as info:
                await client.say(rule.text())

        rule.check_error(info.value, error, outcome_unknown=False)
        assert info.value.server_message == text
        assert len(calls) == 1

    @pytest.mark.scenario(12)
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"message_context": "x" * 1001},
            {"client_metadata": {f"k{i}": i for i in range(6)}},
            {"conv_id": ""},
        ],
    )
    async def test_rules_checked_before_sending(self, served: Emulator, rule: Rule, kwargs):
        """What the server would refuse with a 400 is refused before anything is sent."""
        async with rule.client() as client:
            with pytest.raises(ValidationError) as info:
                await client.say(rule.text(), **kwargs)
        assert_no_secret(str(info.value), "a validation error")
        assert served.stats().requests == 0


# --- 14: redirects -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def redirector(location: str) -> AsyncIterator[list[bytes]]:
    """A loopback server that answers every request with a 307 to `location`."""
    requests: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                requests.append(data)
                await stream.send(
                    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                    + location.encode()
                    + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        requests.append(str(listener.extra(SocketAttribute.local_port)).encode())
        yield requests
        tg.cancel_scope.cancel()


class EndlessStream(httpx2.AsyncByteStream):
    """A body that never ends, and does not stop when closed (as a careless mock would)."""

    def __init__(self) -> None:
        self.chunks = 0

    def __aiter__(self) -> EndlessStream:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        self.chunks += 1
        return b"." * 1024


class TestOversized:
    @pytest.mark.scenario(13)
    async def test_endless_stream_that_ignores_close(self, rule: Rule):
        """A body that keeps coming after the SDK closed it is read only a bounded amount more."""
        stream = EndlessStream()

        def answer(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, stream=stream)

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
            client = rule.client(http_client=http, max_response_bytes=SMALL_BODY)
            with anyio.fail_after(5), pytest.raises(ResponseTooLargeError) as info:
                await client.say(rule.text())

        rule.check_error(info.value, ResponseTooLargeError, outcome_unknown=True)
        assert stream.chunks <= 2 * SMALL_BODY // 1024 + 2


class TestInProcess:
    """The in-process emulator fails as its socket does, and the SDK copes the same way."""

    @pytest.mark.scenario(7)
    @pytest.mark.scenario(13)
    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (Fault("slow_headers", delay=1.0), APITimeoutError),
            (Fault("endless"), ResponseTooLargeError),
            (Fault("drip", interval=0.001, chunk_size=64), None),
        ],
        ids=["slow_headers", "endless", "drip"],
    )
    async def test_slow_and_endless_bodies(self, emulator: Emulator, fault, error):
        """Late headers time out, an endless body is cut at the cap, a quick drip arrives."""
        async with emulator.client(timeout=QUICK, max_response_bytes=SMALL_BODY) as client:
            conv = client.conversation()
            await conv.say("Hello")
            emulator.faults.script([fault])
            with anyio.fail_after(5):
                if error is None:
                    assert (await conv.say("Dripped")).text
                else:
                    with pytest.raises(error):
                        await conv.say("Too slow, too long")
            await conv.say("Again")
            assert conv.history[-1].status is TurnStatus.CONFIRMED
            assert emulator.user_messages(conv.conv_id).count("Again") == 1


class TestRedirects:
    @pytest.mark.scenario(14)
    @pytest.mark.parametrize("follow", [False, True], ids=["sdk-client", "following-http-client"])
    async def test_not_followed(self, served: Emulator, rule: Rule, follow):
        """A 307 is not followed (even by a client set to follow): the credential stays home."""
        async with redirector(f"{served.base_url}/chat") as requests:
            port = int(requests.pop(0))
            async with httpx2.AsyncClient(follow_redirects=follow) as http:
                client = rule.client(base_url=f"http://127.0.0.1:{port}", http_client=http)
                with pytest.raises(APIStatusError) as info:
                    await client.say(rule.text("redirected"))
                await anyio.sleep(0.05)

        rule.check_error(info.value, APIStatusError, outcome_unknown=False, match="redirect")
        assert served.base_url in str(info.value)
        assert len(requests) == 1
        assert TOKEN.encode() in requests[0]  # it went to its own origin...
        assert served.stats().requests == 0  # ...and nowhere else


# --- 16: one conversation, many callers ---------------------------------------------------------


class TestConcurrentTurns:
    @pytest.mark.scenario(16)
    async def test_concurrent_first_turns_open_one_conversation(self, served, rule):
        """Concurrent say() on a new conversation run one at a time, in one conversation."""
        served.service.latency = 0.02
        async with rule.client() as client:
            conv = client.conversation()
            texts = [rule.text("concurrent") for _ in range(6)]
            async with anyio.create_task_group() as tg:
                for text in texts:
                    tg.start_soon(conv.say, text)
                    await anyio.lowlevel.checkpoint()

            (recorded,) = served.conversations()
            assert recorded.conv_id == conv.conv_id
            assert served.user_messages(conv.conv_id) == tuple(texts)
            assert [t.text for t in conv.history] == texts
            rule.check_pool(client)
            rule.check_record()

    @pytest.mark.scenario(16)
    @pytest.mark.scenario(17)
    async def test_waiting_first_turns_after_an_ambiguous_one(self, served, rule):
        """Turns queued behind an ambiguous first turn refuse to open a second conversation."""
        served.faults.script([Fault("drop_after", delay=0.05)])
        async with rule.client() as client:
            conv = client.conversation()
            errors: list[BaseException] = []

            async def say(text: str) -> None:
                try:
                    await conv.say(text)
                except QuickchatError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(say, f"queued {i}")
                    await anyio.lowlevel.checkpoint()

            assert [type(e) for e in errors] == [APIConnectionError] + [UnconfirmedStartError] * 3
            assert len(served.conversations()) == 1
            assert served.stats().requests == 1
            rule.check_pool(client)
        TALLY["faults checked"] += 1
