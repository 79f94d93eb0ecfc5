"""How users call the public API, checked by mypy strict and pyright strict (`nox -s typecheck`).

Never run: it only has to type-check. Each `assert_type` pins a public type, so a change that
widens it (or lets `Any` leak out of `Reply`, `Turn` or an error) fails the type check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import assert_type

import anyio
import httpx2

import quickchat_async
from quickchat_async import (
    NOT_GIVEN,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncQuickchat,
    AsyncSender,
    Conversation,
    EventLoopError,
    Flavor,
    HTTPResponse,
    Httpx2Transport,
    JSONValue,
    Limiter,
    MemoryStore,
    Quickchat,
    QuickchatError,
    RateLimiter,
    RateLimitError,
    RedisRateLimiter,
    Reply,
    ServiceUnavailableError,
    SQLiteStore,
    StoreConflictError,
    StoredConversation,
    StoreError,
    SyncConversation,
    SyncTransport,
    Timeout,
    Transport,
    Turn,
    TurnStatus,
    UnexpectedResponseError,
    ValidationError,
    html_to_text,
)
from quickchat_async.emulator import Fault, RecordedMessage, Stats
from quickchat_async.locust import LocustConversation, QuickchatUser, TurnError
from quickchat_async.otel import OpenTelemetry
from quickchat_async.testing import Emulator


def check_reply(reply: Reply) -> None:
    assert_type(reply.conv_id, str)
    assert_type(reply.html, str)
    assert_type(reply.text, str)
    assert_type(reply.ord_number, int | None)
    assert_type(reply.src, int | None)
    assert_type(reply.raw, Mapping[str, JSONValue])
    assert_type(reply.attempts, int)
    assert_type(reply.elapsed, float)
    assert_type(str(reply), str)


def check_turn(turn: Turn) -> None:
    assert_type(turn.text, str)
    assert_type(turn.reply, Reply | None)
    assert_type(turn.sent_at, dt.datetime)
    assert_type(turn.received_at, dt.datetime)
    assert_type(turn.context, str | None)
    assert_type(turn.metadata, Mapping[str, JSONValue])
    assert_type(turn.kb_topic, str | None)
    assert_type(turn.status, TurnStatus)
    assert_type(turn.landed, bool | None)
    assert_type(turn.error, str | None)
    if turn.reply is not None:
        check_reply(turn.reply)


def check_errors(exc: QuickchatError) -> str:
    assert_type(exc.message, str)
    assert_type(exc.outcome_unknown, bool)
    if isinstance(exc, RateLimitError | ServiceUnavailableError):
        assert_type(exc.retry_after, float | None)
    if isinstance(exc, APIStatusError):
        assert_type(exc.status_code, int)
        assert_type(exc.server_message, str)
        assert_type(exc.response, HTTPResponse)
        assert_type(exc.response.status_code, int)
        assert_type(exc.response.headers, Mapping[str, str])
        assert_type(exc.response.text, str)
    if isinstance(exc, APIConnectionError):
        assert_type(exc.url, str)
    if isinstance(exc, UnexpectedResponseError):
        assert_type(exc.status_code, int)
        assert_type(exc.body, str)
    if isinstance(exc, StoreError):
        assert_type(exc.reply, Reply | None)
    return exc.message


def standard_error(exc: ValueError) -> ValueError:
    return exc


def standard_timeout(exc: TimeoutError) -> TimeoutError:
    return exc


def standard_runtime_error(exc: RuntimeError) -> RuntimeError:
    return exc


async def check_client() -> None:
    timeout = Timeout(total=10, connect=2)
    assert_type(timeout.total, float | None)
    client = AsyncQuickchat(
        token="...",
        scenario_id="...",
        base_url="https://app.quickchat.ai",
        timeout=timeout,
        max_retries=3,
        retry_ambiguous=False,
        default_headers={"X-App": "bot"},
        max_connections=10,
    )
    AsyncQuickchat(api_key="...", scenario_id="...", timeout=None)
    AsyncQuickchat(timeout=NOT_GIVEN, transport="httpx")
    AsyncQuickchat(transport="httpx2", max_connections=10)
    async with httpx2.AsyncClient() as http:
        AsyncQuickchat(token="...", scenario_id="...", http_client=http)
        AsyncQuickchat(token="...", scenario_id="...", transport=Httpx2Transport(http))
    # A transport made anew for each event loop the client runs on.
    AsyncQuickchat(transport=lambda: Httpx2Transport(httpx2.AsyncClient(), close_client=True))
    AsyncQuickchat(transport=Httpx2Transport)
    async with client as opened:
        assert_type(opened, AsyncQuickchat)
        assert_type(opened.flavor, Flavor)
        assert_type(opened.scenario_id, str)
        assert_type(opened.base_url, str)
        assert_type(opened.timeout, Timeout)
        assert_type(opened.max_retries, int)
        assert_type(opened.is_closed, bool)
        assert_type(opened.transport, Transport)

        reply = await opened.say(
            "Hello!", conv_id=None, client_metadata={"kb_topic": "billing", "userId": 12}
        )
        assert_type(reply, Reply)
        check_reply(reply)
        await check_conversations(opened)
        await check_production(opened)


async def check_conversations(opened: AsyncQuickchat) -> None:
    conv = opened.conversation(kb_topic="billing", metadata={"userId": 12}, max_history=50)
    assert_type(conv, Conversation)
    assert_type(conv.conv_id, str | None)
    assert_type(conv.kb_topic, str | None)
    assert_type(conv.metadata, Mapping[str, JSONValue])
    # conv.client is the sending half of the AsyncQuickchat that made it: what it sends with.
    assert_type(conv.client, AsyncSender)
    assert_type(await conv.client.say("Hello!"), Reply)
    assert_type(conv.client.scenario_id, str)
    assert_type(conv.client.is_closed, bool)
    assert isinstance(conv.client, AsyncQuickchat)
    assert_type(await conv.say("How do refunds work?", context="The user is John."), Reply)
    assert_type(conv.history, tuple[Turn, ...])
    assert_type(conv.unconfirmed, tuple[Turn, ...])
    for turn in conv.history:
        check_turn(turn)
    conv.kb_topic = "shipping"
    conv.start_over()

    snapshot = conv.snapshot()
    assert_type(snapshot, dict[str, JSONValue])
    assert_type(opened.resume(snapshot), Conversation)

    async with SQLiteStore("bot.db") as store:
        stored = await opened.conversation_for("telegram:42", store=store, kb_topic="billing")
        assert_type(stored, StoredConversation)
        assert_type(await stored.say("Hello!"), Reply)
        assert_type(stored.history, tuple[Turn, ...])
        assert_type(stored.conv_id, str | None)
    await opened.conversation_for("web:1", store=MemoryStore(), max_history=None)

    try:
        await conv.say("Hi")
    except ValidationError as exc:
        assert_type(standard_error(exc), ValueError)  # a ValidationError is a ValueError
    except APITimeoutError as exc:
        assert_type(standard_timeout(exc), TimeoutError)  # an APITimeoutError a TimeoutError
        check_errors(exc)
    except StoreConflictError as exc:
        assert_type(exc.reply, Reply | None)
    except EventLoopError as exc:
        assert_type(standard_runtime_error(exc), RuntimeError)  # another loop's turn is running
    except QuickchatError as exc:
        check_errors(exc)


async def check_production(opened: AsyncQuickchat) -> None:
    reply = await opened.say(
        "Hello!",
        timeout=Timeout(total=5),
        max_retries=1,
        deadline=10.0,
        extra_headers={"X-Request-Id": "r-1"},
        extra_body={"channel": "web", "tags": ["a"]},
    )
    assert_type(reply.attempts, int)
    assert_type(reply.elapsed, float)
    conv = opened.conversation()
    assert_type(await conv.say("Hi", deadline=None, timeout=3), Reply)
    derived = opened.with_options(
        timeout=10,
        max_retries=0,
        retry_ambiguous=True,
        deadline=30,
        default_headers={"X-Team": "support"},
        rate_limiter=None,
    )
    assert_type(derived, AsyncQuickchat)
    limiter: Limiter = RateLimiter(per_second=5)
    fleet = RedisRateLimiter("redis://127.0.0.1:6379/0", per_minute=600, key="qc:bot")
    async with fleet, AsyncQuickchat(rate_limiter=fleet, deadline=20.0) as client:
        assert_type(client.rate_limiter, Limiter | None)
        await client.fan_out([["Hi"]], rate_limiter=limiter)
    telemetry = OpenTelemetry(record_content=True, agent_name="Support")
    assert_type(telemetry.record_content, bool)
    AsyncQuickchat(telemetry=telemetry)
    AsyncQuickchat(telemetry=None)


async def check_testing() -> None:
    emulator = Emulator(seed=1)
    emulator.faults.script(["rate_limit", Fault("slow_headers", delay=0.5), None])
    async with emulator.client(flavor="legacy", max_retries=0) as client:
        assert_type(client, AsyncQuickchat)
        reply = await client.say("Hello!")
    assert_type(emulator.messages(reply.conv_id), tuple[RecordedMessage, ...])
    assert_type(emulator.user_messages(reply.conv_id), tuple[str, ...])
    assert_type(emulator.stats(), Stats)
    async with emulator.http_client() as http:
        assert_type(http, httpx2.AsyncClient)
    async with Emulator() as served:
        assert_type(served.base_url, str)


def check_blocking_client() -> None:
    with Quickchat(token="...", scenario_id="...", timeout=Timeout(total=10)) as client:
        assert_type(client, Quickchat)
        assert_type(client.transport, SyncTransport)
        assert_type(client.deadline, float | None)
        assert_type(client.say("Hello!", conv_id=None, timeout=5, deadline=20), Reply)
        conv = client.conversation(kb_topic="billing", metadata={"userId": 12}, max_history=10)
        assert_type(conv, SyncConversation)
        reply = conv.say(
            "Hi", context="The user is John.", metadata={"page": "home"}, max_retries=0
        )
        assert_type(reply, Reply)
        assert_type(conv.conv_id, str | None)
        assert_type(conv.history, tuple[Turn, ...])
        assert_type(conv.unconfirmed, tuple[Turn, ...])
        conv.kb_topic = "shipping"
        snapshot = conv.snapshot()
        assert_type(snapshot, dict[str, JSONValue])
        assert_type(client.resume(snapshot), SyncConversation)
        assert_type(client.with_options(deadline=30, default_headers={"X-App": "web"}), Quickchat)
    with httpx2.Client() as http, Quickchat(api_key="...", http_client=http) as theirs:
        assert_type(theirs.flavor, Flavor)
    with Quickchat(transport="gevent", max_connections=8) as on_gevent:
        assert_type(on_gevent.say("Hello!"), Reply)
    emulator = Emulator()
    with emulator.sync_client(flavor="legacy") as test_client:
        assert_type(test_client, Quickchat)
    with Emulator() as served:
        assert_type(served.sync_http_client(), httpx2.Client)


class Visitor(QuickchatUser):
    client_options = {"deadline": 60}  # noqa: RUF012 -- Locust's style of class settings

    def turn(self) -> None:
        assert_type(self.client, Quickchat)
        conv = self.conversation(kb_topic="billing")
        assert_type(conv, LocustConversation)
        conv.name = "greeting"
        try:
            assert_type(conv.say("Hello!", deadline=30), Reply)
            assert_type(self.say("Hi", name="bare", client_metadata={"kb_topic": "x"}), Reply)
        except TurnError as failed:
            assert_type(failed.error, QuickchatError)


def check_module() -> None:
    assert_type(quickchat_async.__version__, str)
    assert_type(html_to_text("a<br>b"), str)
    assert_type(TurnStatus("landed"), TurnStatus)
    anyio.run(check_client)
