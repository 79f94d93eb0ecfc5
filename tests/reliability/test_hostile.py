"""What a hostile or broken world tries, class by class: scenarios 19 to 30.

Cancellation mid-save, unstorable replies, leaked keys in tracebacks, pasted credentials,
quadratic parsing, miscounted turns, deep JSON, closing mid-retry, HTTP/2 debug logs,
decompression bombs, and answers for another conversation.

Each class of failure is tried in several variants; over real loopback sockets where a socket
can show it (the served emulator, or a small server of the test's own), through httpx2's mock
transport where only the SDK's parsing is at stake.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import pathlib
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import httpx2
import pytest
import stamina
from anyio.abc import SocketAttribute

from quickchat_async import (
    APIConnectionError,
    AsyncQuickchat,
    ClientClosedError,
    ConversationStore,
    InternalServerError,
    MemoryStore,
    QuickchatError,
    RateLimiter,
    RedisStore,
    ResponseTooLargeError,
    SQLiteStore,
    StoreRecord,
    TurnStatus,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
    html_to_text,
)
from quickchat_async._logs import guard_header_blocks
from quickchat_async._wire import quote_server_text
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import FakeChat, Landed, chat_reply
from tests.stores.conftest import _redis_url, redis_prefix  # noqa: F401 -- the fixture

from .rule import API_KEY, TALLY, TOKEN, Rule, assert_no_secret, formatted_with_locals


pytestmark = pytest.mark.anyio

rich_pretty = pytest.importorskip("rich.pretty")


@contextlib.asynccontextmanager
async def tcp_server(
    serve: Callable[[anyio.abc.SocketStream], Any],
) -> AsyncIterator[str]:
    """A loopback server of the test's own; yields its base URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await serve(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        tg.cancel_scope.cancel()


async def read_request(stream: anyio.abc.SocketStream) -> bytes:
    """Read one HTTP/1.1 request with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive()
    return body


def respond(status: int, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}"
        "Connection: close\r\n\r\n".encode()
        + body
    )


# --- 19: a stored turn survives every way a program cancels ------------------------------------


class SlowSave:
    """A store whose save waits a little before saving, and says when it started."""

    def __init__(self, inner: ConversationStore, *, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.saving = anyio.Event()

    def lock(
        self, user_key: str, *, ttl: float, timeout: float
    ) -> AbstractAsyncContextManager[None]:
        return self.inner.lock(user_key, ttl=ttl, timeout=timeout)

    async def load(self, user_key: str) -> StoreRecord | None:
        return await self.inner.load(user_key)

    async def save(self, user_key: str, record: StoreRecord, *, replaces: str | None) -> None:
        self.saving.set()
        await anyio.sleep(self.delay)
        await self.inner.save(user_key, record, replaces=replaces)

    async def delete(self, user_key: str) -> None:
        await self.inner.delete(user_key)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(name="store_kind", params=["memory", "sqlite", "redis"])
def _store_kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    if request.param == "redis" and anyio_backend == "trio":
        pytest.skip("redis.asyncio runs on asyncio only")
    return str(request.param)


@pytest.fixture(name="make_store")
def _make_store(
    store_kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Callable[[], ConversationStore]:
    def make() -> ConversationStore:
        if store_kind == "memory":
            return MemoryStore()
        if store_kind == "sqlite":
            return SQLiteStore(tmp_path / f"{time.monotonic_ns()}.db")
        url = request.getfixturevalue("redis_url")
        return RedisStore(url, prefix=redis_prefix())

    return make


async def cancel_during_save(how: str, say: Callable[[], Any], store: SlowSave, steps: int) -> None:
    """Run `say()`, cancel it `how` once its save is under way (after `steps` loop steps)."""
    if how == "task-cancel":
        task = asyncio.ensure_future(say())
        await store.saving.wait()
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    elif how == "wait-for":
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(say(), timeout=store.delay / 2)
    elif how == "asyncio-timeout":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(store.delay / 2):
                await say()
    else:  # an anyio (on trio: trio's own) cancel scope
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(say)
                await store.saving.wait()
                scope.cancel()


ASYNCIO_WAYS = ["task-cancel", "wait-for", "asyncio-timeout"]


class TestCancelledSave:
    @pytest.mark.scenario(19)
    @pytest.mark.parametrize("how", [*ASYNCIO_WAYS, "cancel-scope"])
    async def test_the_reply_that_arrived_is_stored(
        self, served: Emulator, rule: Rule, make_store, how, anyio_backend
    ):
        """Cancelled while its save runs, a turn is stored all the same, and the lock is free."""
        if how in ASYNCIO_WAYS and anyio_backend != "asyncio":
            pytest.skip("asyncio's own cancellation")
        for steps in range(4 if how == "task-cancel" else 1):
            store = SlowSave(make_store(), delay=0.2)
            async with rule.client() as client, store.inner:
                options = {"store": store, "lock_ttl": 30, "lock_timeout": 2}
                conv = await client.conversation_for("user-1", **options)  # type: ignore[arg-type]
                await conv.say(rule.text())
                store.saving = anyio.Event()
                text = rule.text("cancelled while saving")

                await cancel_during_save(how, lambda: conv.say(text), store, steps)  # noqa: B023

                again = await client.conversation_for("user-1", **options)  # type: ignore[arg-type]
                assert again.history[-1].text == text, "the reply that arrived was not stored"
                assert again.history[-1].status is TurnStatus.CONFIRMED
                store.delay = 0
                reply = await again.say(rule.text("next"))  # the lock was released
                assert reply.conv_id == conv.conv_id
                assert len(served.conversations()) == 1
                rule.check_record()
            served.reset()
            TALLY["faults checked"] += 1

    @pytest.mark.scenario(19)
    @pytest.mark.parametrize("how", ["task-cancel", "cancel-scope"])
    async def test_a_conversation_commits_the_reply_it_received(self, rule, how, anyio_backend):
        """A cancellation that comes as the reply is handed back leaves the turn committed."""
        if how == "task-cancel" and anyio_backend != "asyncio":
            pytest.skip("asyncio's own cancellation")
        scope = anyio.CancelScope()
        chat = FakeChat()
        tasks: list[asyncio.Task[object]] = []

        async def cancel_as_it_answers(request: httpx2.Request) -> httpx2.Response:
            response = await chat(request)
            if tasks:
                tasks[0].cancel()
            else:
                scope.cancel()
            return response

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(cancel_as_it_answers)) as http:
            client = rule.client(http_client=http)
            conv = client.conversation()
            text = rule.text()
            if how == "task-cancel":
                tasks.append(asyncio.ensure_future(conv.say(text)))
                with contextlib.suppress(asyncio.CancelledError):
                    await tasks[0]
            else:
                with scope:
                    await conv.say(text)
        assert [turn.text for turn in conv.history] == [text]
        assert conv.conv_id == "conv-1"


# --- 20: whatever a server sends is stored, or refused with a typed error --------------------

LONE = "\\ud83d"  # an emoji cut in half, as JSON escapes it
UNSTORABLE_REPLIES = {
    "reply-half-emoji": (f'{{"conv_id":"conv-1","reply":"Hi {LONE}","ord_number":3}}', True),
    "raw-key-and-value": (
        f'{{"conv_id":"conv-1","reply":"Hi","ord_number":3,"x{LONE}":["{LONE}"]}}',
        True,
    ),
    "big-integer": ('{"conv_id":"conv-1","reply":"Hi","ord_number":3,"n":' + "9" * 40 + "}", True),
    "conv-id-half-emoji": (f'{{"conv_id":"conv-1{LONE}","reply":"Hi","ord_number":3}}', False),
    "nan": ('{"conv_id":"conv-1","reply":"Hi","ord_number":3,"n":NaN}', False),
    "infinite": ('{"conv_id":"conv-1","reply":"Hi","ord_number":3,"n":1e999}', False),
}


class TestUnstorableReplies:
    @pytest.mark.scenario(20)
    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    @pytest.mark.parametrize("body", list(UNSTORABLE_REPLIES), ids=list(UNSTORABLE_REPLIES))
    async def test_stored_or_refused(self, make_client, tmp_path, body, kind):
        """A first reply is stored as one conversation, or refused and kept unconfirmed."""
        text, accepted = UNSTORABLE_REPLIES[body]
        chat = FakeChat()
        chat.ords["conv-1"] = 3  # the hostile reply opened conv-1
        chat.script(httpx2.Response(200, content=text.encode()))
        client = make_client(chat)
        store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "bot.db")
        async with store:
            conv = await client.conversation_for("user-1", store=store)
            if accepted:
                reply = await conv.say("Hello")
                assert "\ud83d" not in reply.text
                reply.text.encode()
            else:
                with pytest.raises(UnexpectedResponseError):
                    await conv.say("Hello")
            again = await client.conversation_for("user-1", store=store)
            if accepted:
                assert again.conv_id == "conv-1"
                assert (await again.say("Go on")).conv_id == "conv-1"
            else:
                assert again.history[-1].status is TurnStatus.UNCONFIRMED
                with pytest.raises(UnconfirmedStartError):  # never a second conversation
                    await again.say("Go on")
        TALLY["bad inputs tried"] += 1


# --- 21: no credential in any frame a traceback shows ---------------------------------------


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


BAD_INPUTS: dict[str, Callable[[AsyncQuickchat], Any]] = {
    "text-half-emoji": lambda c: c.say("Hi \ud83d"),
    "context-half-emoji": lambda c: c.say("Hi", message_context="\ud83d"),
    "metadata-value-half-emoji": lambda c: c.conversation().say("Hi", metadata={"k": "\udc00"}),
    "metadata-key-half-emoji": lambda c: c.conversation().say("Hi", metadata={"\udc00": 1}),
    "metadata-set": lambda c: c.say("Hi", client_metadata={"k": {1}}),
    "metadata-nan": lambda c: c.say("Hi", client_metadata={"k": float("nan")}),
    "metadata-cyclic": lambda c: c.say("Hi", client_metadata=cyclic()),
    "metadata-deep": lambda c: c.say("Hi", client_metadata={"k": nested(300)}),
    "extra-body-credential-value": lambda c: c.say("Hi", extra_body={"x": [TOKEN, API_KEY]}),
    "extra-body-credential-key": lambda c: c.say("Hi", extra_body={TOKEN + API_KEY: 1}),
    "extra-body-half-emoji": lambda c: c.say("Hi", extra_body={"x": "\ud800"}),
    "extra-headers-credential": lambda c: c.say("Hi", extra_headers={"X": f"{TOKEN}{API_KEY}"}),
    "extra-headers-not-ascii": lambda c: c.say("Hi", extra_headers={"X": "caf\u00e9"}),
    "kb-topic-half-emoji": lambda c: c.conversation(kb_topic="\ud83d").say("Hi"),
    "default-headers-credential": lambda c: c.with_options(
        default_headers={"X": f"{TOKEN}{API_KEY}"}
    ).say("Hi"),
}


class TestNoCredentialInLocals:
    @pytest.mark.scenario(21)
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    @pytest.mark.parametrize("bad", list(BAD_INPUTS), ids=list(BAD_INPUTS))
    async def test_refused_input(self, make_client, flavor, bad):
        """Refused input raises ValidationError from frames whose locals hold no credential."""
        client = make_client(**({"api_key": API_KEY} if flavor == "legacy" else {}))
        with pytest.raises(ValidationError) as info:
            await BAD_INPUTS[bad](client)
        if "credential" not in bad:  # else the caller's own argument holds it, in every frame
            assert_no_secret(formatted_with_locals(info.value), "the traceback with locals")
        assert_no_secret(rich_pretty.pretty_repr(info.value), "the error, pretty-printed")
        assert_no_secret(repr(info.value), "the error's repr")
        TALLY["bad inputs tried"] += 1


# --- 22: a credential that is not visible ASCII ---------------------------------------------

PASTED = {
    "no-break-space": ("tok-CANARY-current\u00a07f3a9c", "U+00A0", 19),
    "zero-width-space": ("\u200btok-CANARY-current-7f3a9c", "U+200B", 1),
    "accented": ("tok-CANARY-curr\u00e9nt-7f3a9c", "U+00E9", 16),
    "tab": ("tok-CANARY-current-7f3a9c\t", "U+0009", 26),
    "inner-space": ("tok-CANARY current-7f3a9c", "U+0020", 11),
    "half-emoji": ("tok-CANARY-current-7f3a9c\ud83d", "U+D83D", 26),
}


class TestPastedCredential:
    @pytest.mark.scenario(22)
    @pytest.mark.parametrize("where", ["token", "api_key", "environment"])
    @pytest.mark.parametrize("pasted", list(PASTED), ids=list(PASTED))
    def test_refused_at_construction(self, monkeypatch, where, pasted):
        """Refused at once, naming the character and its position, never the credential."""
        value, codepoint, position = PASTED[pasted]
        if where == "environment" and pasted == "half-emoji":
            pytest.skip("the environment holds bytes: no half of a UTF-16 pair")
        secret = value.replace("\u200b", "")[:-1]  # no part of it may show
        if where == "environment":
            monkeypatch.setenv("QUICKCHAT_API_TOKEN", value)
            arguments = {}
        else:
            arguments = {where: value}
        with pytest.raises(ValidationError) as info:
            AsyncQuickchat(scenario_id="s", **arguments)
        message = str(info.value)
        assert codepoint in message
        assert f"position {position} of" in message
        for text in (message, repr(info.value), formatted_with_locals(info.value)):
            assert "CANARY" not in text.split("quickchat_async", 1)[-1] or secret not in text
        assert secret not in message
        TALLY["bad inputs tried"] += 1


# --- 23: parsing server text is linear in its size ---------------------------------------------

HOSTILE_SHAPES = {
    "unclosed-title": "<title>",
    "unclosed-script": "<script>",
    "unclosed-head": "<head>x",
    "unclosed-tags": "<a",
    "unclosed-attribute": '<a b="',
    "unclosed-comment": "<!--",
    "lone-brackets": "<>",
    "end-tags": "</",
    "entities": "&amp",
    "many-tags": "<b>x",
}


def best_time(function: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        function(text)
        best = min(best, time.perf_counter() - started)
    return best


class TestLinearParsing:
    @pytest.mark.scenario(23)
    @pytest.mark.parametrize("parser", [quote_server_text, html_to_text], ids=["quote", "html"])
    @pytest.mark.parametrize("shape", list(HOSTILE_SHAPES), ids=list(HOSTILE_SHAPES))
    def test_ten_times_the_size_takes_about_ten_times_the_time(self, parser, shape):
        """Hostile bodies at 10x the size take about 10x the time (quadratic would be 100x)."""
        unit = HOSTILE_SHAPES[shape]
        small, large = (unit * (size // len(unit)) + ">" for size in (30_000, 300_000))
        gc.collect()
        ratio = best_time(parser, large) / max(best_time(parser, small), 1e-5)
        assert ratio < 35, f"{ratio:.0f}x the time for 10x the size"
        TALLY["bad inputs tried"] += 2

    @pytest.mark.scenario(23)
    async def test_the_event_loop_keeps_ticking(self, rule: Rule):
        """A 1 MB hostile error page over a socket does not stall a concurrent task."""
        page = ("<title>" * 150_000 + "<script><a b='" * 20_000).encode()[: 1024 * 1024]

        async def serve(stream: anyio.abc.SocketStream) -> None:
            await read_request(stream)
            await stream.send(respond(502, page, "Content-Type: text/html"))

        gaps: list[float] = []

        async def tick() -> None:
            last = anyio.current_time()
            while True:
                await anyio.sleep(0.005)
                now = anyio.current_time()
                gaps.append(now - last)
                last = now

        async with (
            tcp_server(serve) as url,
            rule.client(base_url=url, max_retries=0) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(tick)
            with pytest.raises(InternalServerError) as info:
                await client.say(rule.text())
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        rule.check_error(info.value, InternalServerError, outcome_unknown=True)
        assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.2f} s"


# --- 24: settling counts only what the numbers prove ------------------------------------------


class TestSettlingWithDuplicates:
    @pytest.mark.scenario(24)
    async def test_a_retried_duplicate_does_not_land_a_lost_turn(self, served, rule):
        """A turn recorded twice by a retry never makes a lost turn count as landed."""
        async with rule.client(retry_ambiguous=True) as client:
            conv = client.conversation()
            await conv.say(rule.text())
            served.faults.script(["error_before"])  # not recorded
            with pytest.raises(InternalServerError):
                await conv.say(lost := rule.text("lost"), max_retries=0)
            served.faults.script(["error_after"])  # recorded, then a 500: retried, recorded again
            await conv.say(twice := rule.text("recorded twice"))

            assert served.user_messages(conv.conv_id).count(twice) == 2
            assert lost not in served.user_messages(conv.conv_id)
            assert conv.history[1].text == lost
            assert conv.history[1].status is TurnStatus.UNCONFIRMED  # never LANDED
            rule.check_pool(client)
        served.reset()  # the duplicate was the point

    @pytest.mark.scenario(24)
    async def test_a_pending_turn_recorded_twice_proves_nothing(self, make_client):
        """Pending turns retried after ambiguous failures are never all claimed landed."""
        chat = FakeChat()
        client = make_client(chat, retry_ambiguous=True, max_retries=1)
        conv = client.conversation()
        await conv.say("Hello")
        boom = httpx2.Response(500, text="boom")
        chat.script(Landed(boom), Landed(boom))  # recorded twice, no reply
        with pytest.raises(InternalServerError):
            await conv.say("twice")
        chat.script(boom)  # not recorded at all
        with pytest.raises(InternalServerError):
            await conv.say("never", max_retries=0)
        await conv.say("Are you there?")
        assert [turn.status for turn in conv.history[1:3]] == [TurnStatus.UNCONFIRMED] * 2

    @pytest.mark.scenario(24)
    async def test_what_the_numbers_prove_is_still_settled(self, make_client):
        """Without retries of ambiguous failures, landed and lost turns are told apart."""
        chat = FakeChat()
        client = make_client(chat, retry_ambiguous=True)
        conv = client.conversation()
        await conv.say("Hello")
        chat.script(Landed(httpx2.Response(500)))
        with pytest.raises(InternalServerError):
            await conv.say("landed", max_retries=0)
        await conv.say("next")
        chat.script(httpx2.Response(500))
        with pytest.raises(InternalServerError):
            await conv.say("lost", max_retries=0)
        await conv.say("again")
        assert [t.status for t in conv.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
            TurnStatus.NOT_LANDED,
            TurnStatus.CONFIRMED,
        ]


# --- 25: deep JSON ----------------------------------------------------------------------------


class TestDeepJSON:
    @pytest.mark.scenario(25)
    @pytest.mark.parametrize("depth", [200, 1_000, 5_000, 50_000])
    async def test_a_deep_reply_is_unexpected_and_kept_unconfirmed(self, make_client, depth):
        """A 2xx nested past the limit is UnexpectedResponseError; the turn stays unconfirmed."""
        chat = FakeChat()
        deep = "[" * depth + "]" * depth
        chat.ords["conv-1"] = 1
        client = make_client(chat)
        store = MemoryStore()
        conv = await client.conversation_for("user-1", store=store)
        await conv.say("Hello")
        chat.script(
            Landed(httpx2.Response(200, content=f'{{"conv_id":"conv-1","reply":"x","d":{deep}}}'))
        )
        with pytest.raises(UnexpectedResponseError, match=r"nested|not JSON") as info:
            await conv.say("deep")
        assert info.value.outcome_unknown
        assert conv.history[-1].status is TurnStatus.UNCONFIRMED
        await conv.say("next")
        assert conv.history[-2].status is TurnStatus.LANDED
        TALLY["bad inputs tried"] += 1

    @pytest.mark.scenario(25)
    @pytest.mark.parametrize("depth", [130, 1_000, 100_000])
    @pytest.mark.parametrize(
        "where",
        ["client_metadata", "turn_metadata", "conversation", "extra_body", "stored", "resume"],
    )
    async def test_deep_metadata_is_a_validation_error(self, make_client, depth, where):
        """Metadata nested past the limit is refused before sending, wherever it is given."""
        client = make_client()
        value = {"k": nested(depth)}
        with pytest.raises(ValidationError, match="nested more than"):  # noqa: PT012
            if where == "client_metadata":
                await client.say("Hi", client_metadata=value)
            elif where == "turn_metadata":
                await client.conversation().say("Hi", metadata=value)
            elif where == "conversation":
                client.conversation(metadata=value)
            elif where == "extra_body":
                await client.say("Hi", extra_body=value)
            elif where == "stored":
                await client.conversation_for("u", store=MemoryStore(), metadata=value)
            else:
                snapshot = client.conversation().snapshot()
                client.resume({**snapshot, "metadata": value})
        TALLY["bad inputs tried"] += 1


# --- 26: closing the client mid-turn --------------------------------------------------------


class TestClosingMidTurn:
    @pytest.mark.scenario(26)
    @pytest.mark.parametrize("wait", ["retry-after", "slot", "rate"])
    async def test_closed_while_the_turn_waits(self, served, rule, transport_name, wait):
        """aclose() while a turn waits (Retry-After, a slot, the rate) ends it ClientClosedError."""
        options: dict[str, Any] = {"transport": transport_name, "timeout": 10}
        if wait == "slot":
            options["max_connections"] = 1
            served.faults.script([Fault("slow_headers", delay=0.5)])
        if wait == "rate":
            options["rate_limiter"] = RateLimiter(per_second=1)
        if wait == "retry-after":
            served.faults.script([Fault("rate_limit", retry_after="5")])
        errors: list[BaseException] = []

        async def say(client: AsyncQuickchat, text: str) -> None:
            try:
                await client.say(text)
            except QuickchatError as exc:
                errors.append(exc)

        with stamina.set_testing(False):
            client = rule.client(**options)
            async with anyio.create_task_group() as tg:
                if wait != "retry-after":
                    tg.start_soon(say, client, rule.text("holds the slot"))
                    await anyio.sleep(0.1)
                tg.start_soon(say, client, rule.text("waits"))
                await anyio.sleep(0.3)
                await client.aclose()
        assert errors, "the waiting turn went on after aclose()"
        closed = [exc for exc in errors if isinstance(exc, ClientClosedError)]
        assert closed, errors
        rule.check_error(closed[0], ClientClosedError)
        assert all(isinstance(exc, QuickchatError) for exc in errors)

    @pytest.mark.scenario(26)
    async def test_a_callers_http_client_closed_mid_retry(self, served, rule):
        """The caller closing its own http_client between attempts: ClientClosedError."""
        served.faults.script([Fault("rate_limit", retry_after="0.3")])
        http = httpx2.AsyncClient()
        client = rule.client(http_client=http)
        errors: list[QuickchatError] = []

        async def say() -> None:
            try:
                await client.say(rule.text())
            except QuickchatError as exc:
                errors.append(exc)

        with stamina.set_testing(False):
            async with anyio.create_task_group() as tg:
                tg.start_soon(say)
                await anyio.sleep(0.1)
                await http.aclose()
        (error,) = errors
        rule.check_error(error, ClientClosedError)
        await client.aclose()


# --- 27: HTTP/2 header blocks stay out of DEBUG logs ---------------------------------------------


async def serve_h2(stream: anyio.abc.SocketStream) -> None:
    """An HTTP/2 (prior knowledge, h2c) Chat endpoint: one reply per request."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    await stream.send(connection.data_to_send())
    ords = iter(range(3, 1000, 2))
    while True:
        for event in connection.receive_data(await stream.receive()):
            if isinstance(event, h2.events.DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = json.dumps({"conv_id": "c-1", "reply": "Hi", "ord_number": next(ords)})
                connection.send_headers(
                    event.stream_id,
                    [(":status", "200"), ("content-length", str(len(body)))],
                )
                connection.send_data(event.stream_id, body.encode(), end_stream=True)
        await stream.send(connection.data_to_send())


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestHTTP2DebugLogs:
    @pytest.mark.scenario(27)
    @pytest.mark.parametrize("flavor", ["current", "legacy"])
    async def test_no_header_block_in_the_sdks_debug_setup(self, rule, flavor):
        """At DEBUG, an HTTP/2 client's header blocks are filtered out of the SDK's handler."""
        guarded, raw = Collect(), Collect()
        guard_header_blocks(guarded)
        loggers = [logging.getLogger(name) for name in ("hpack", "h2", "httpcore2", "httpx2")]
        saved = [(logger, logger.level, logger.propagate) for logger in loggers]
        try:
            for logger in loggers:
                logger.setLevel(logging.DEBUG)  # as a user who turns everything to DEBUG
                logger.propagate = False  # kept from the suite's own canary: it would fail
                logger.addHandler(guarded)
                logger.addHandler(raw)
            async with (
                tcp_server(serve_h2) as url,
                httpx2.AsyncClient(http1=False, http2=True) as http,
                rule.client(flavor=flavor, base_url=url, http_client=http) as client,
            ):
                conv = client.conversation()
                await conv.say(rule.text())
                await conv.say(rule.text())
        finally:
            for logger, level, propagate in saved:
                logger.setLevel(level)
                logger.propagate = propagate
                logger.removeHandler(guarded)
                logger.removeHandler(raw)
        assert any(r.name.startswith("hpack") for r in raw.records), "no header block to filter"
        assert not any(r.name.startswith(("hpack", "h2")) for r in guarded.records)
        for record in guarded.records:
            assert_no_secret(record.getMessage(), f"the log record {record.name}")
            assert_no_secret(repr(vars(record)), f"the log record {record.name}")


# --- 28: memory a server (or a client of the emulator) can blow up --------------------------------


def gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    return b"".join([compressor.compress(chunk) for _ in range(megabytes)] + [compressor.flush()])


BOMB = gzip_bomb(200)


class TestDecompressionBomb:
    @pytest.mark.scenario(28)
    @pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip", "deflate", "br", "zstd"])
    async def test_the_cap_holds_on_decoded_bytes(self, rule, transport_name, encoding):
        """A small body that inflates to 200 MB costs no more memory than a few caps."""
        body = BOMB
        if encoding == "gzip, gzip":
            body = zlib.compress(BOMB, wbits=16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            body = zlib.compress(b"\0" * (200 << 20), 9)

        async def serve(stream: anyio.abc.SocketStream) -> None:
            await read_request(stream)
            await stream.send(respond(200, body, f"Content-Encoding: {encoding}"))

        limit = 256 * 1024
        async with tcp_server(serve) as url:
            client = rule.client(
                base_url=url, transport=transport_name, max_response_bytes=limit, max_retries=0
            )
            async with client:
                tracemalloc.start()
                try:
                    with pytest.raises((ResponseTooLargeError, APIConnectionError)) as info:
                        await client.say(rule.text())
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        expected = APIConnectionError if encoding in {"br", "zstd"} else ResponseTooLargeError
        rule.check_error(info.value, expected, outcome_unknown=True)
        assert peak < 4 * len(body) + 16 * limit, f"{peak / 1e6:.0f} MB for a {limit} cap"
        TALLY["bad inputs tried"] += 1

    @pytest.mark.scenario(28)
    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
    async def test_the_emulator_refuses_a_huge_request_as_it_streams(self, served, declared):
        """A 64 MB POST gets a 413 at the emulator's limit; the emulator never holds it."""
        served.service.max_request_bytes = 64 * 1024
        megabyte = b"x" * (1 << 20)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield megabyte

        headers = {"content-length": str(64 << 20)} if declared else {}
        tracemalloc.start()
        try:
            async with httpx2.AsyncClient() as http:
                with contextlib.suppress(httpx2.TransportError):
                    response = await http.post(
                        f"{served.base_url}/chat", content=chunks(), headers=headers
                    )
                    assert response.status_code == 413
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            served.service.max_request_bytes = 1024 * 1024
        assert served.stats().by_status == {413: 1}
        assert served.conversations() == ()
        assert peak < 16 << 20, f"{peak / 1e6:.0f} MB held for a 64 MB body"


# --- 29, 30: answers for another conversation; snapshots taken mid-turn ------------------


class TestAnotherConversationsReply:
    @pytest.mark.scenario(29)
    @pytest.mark.parametrize("stateless", [False, True], ids=["conversation", "client.say"])
    async def test_refused_not_adopted(self, make_client, stateless):
        """A continuation answered with another conv_id is refused; the conversation stays."""
        chat = FakeChat()
        client = make_client(chat)
        conv = client.conversation()
        await conv.say("Hello")
        chat.script(chat_reply("someone else's", conv_id="conv-77", ord_number=9))
        with pytest.raises(UnexpectedResponseError, match="conv_id") as info:  # noqa: PT012
            if stateless:
                await client.say("Go on", conv_id="conv-1")
            else:
                await conv.say("Go on")
        assert info.value.outcome_unknown
        assert conv.conv_id == "conv-1"
        if not stateless:
            assert conv.history[-1].status is TurnStatus.UNCONFIRMED
        assert (await conv.say("Still me?")).conv_id == "conv-1"


class TestSnapshotMidTurn:
    @pytest.mark.scenario(30)
    @pytest.mark.parametrize("first", [True, False], ids=["first-turn", "continuation"])
    async def test_the_turn_in_flight_is_kept_unconfirmed(self, served, rule, first):
        """A snapshot taken mid-turn keeps that turn; resuming it never splits the conversation."""
        async with rule.client() as client:
            conv = client.conversation()
            if not first:
                await conv.say(rule.text())
            served.faults.script([Fault("slow_headers", delay=0.3)])
            async with anyio.create_task_group() as tg:
                tg.start_soon(conv.say, in_flight := rule.text("in flight"))
                await anyio.sleep(0.1)
                snapshot = json.loads(json.dumps(conv.snapshot()))
            resumed = client.resume(snapshot)
            assert resumed.history[-1].text == in_flight
            assert resumed.history[-1].status is TurnStatus.UNCONFIRMED
            if first:
                with pytest.raises(UnconfirmedStartError):
                    await resumed.say(rule.text("resumed"))
            else:
                await resumed.say(rule.text("resumed"))
                assert resumed.conv_id == conv.conv_id
                assert resumed.history[-2].status is TurnStatus.UNCONFIRMED  # never claimed
            assert len(served.conversations()) == 1
            rule.check_record()
