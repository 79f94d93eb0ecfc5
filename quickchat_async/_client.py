"""`AsyncQuickchat`: the client users build, and the conversations, stores and fan-outs it makes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ._conversation import Conversation
from ._fanout import FanOut, FanOutOptions, FanOutResult, Job
from ._ratelimit import Limiter
from ._sender import AsyncSender
from ._stores import ConversationStore, StoredConversation
from ._stores._conversation import StoredOptions
from ._types import NOT_GIVEN, JSONValue, NotGiven


__all__ = ["AsyncQuickchat"]


class AsyncQuickchat(AsyncSender):
    """An async client for Quickchat AI's Chat endpoint, in either of its two flavors.

    Give it a `token` for the current flavor (Bearer auth, `https://app.quickchat.ai/chat`) or
    an `api_key` for the legacy one (`api_key` in the body, `https://chat.quickchat.ai/chat`).
    Unset arguments fall back to `QUICKCHAT_API_TOKEN`, `QUICKCHAT_API_KEY`,
    `QUICKCHAT_SCENARIO_ID` and `QUICKCHAT_BASE_URL`.

    Use it as an async context manager, or call `aclose()` when done.

    Args:
        token: the API token (current flavor).
        api_key: the API key (legacy flavor).
        scenario_id: the AI Agent's ID.
        base_url: where the Chat endpoint lives; requests go to `{base_url}/chat`. Plain
            `http://` is refused except to a loopback host.
        timeout: seconds one attempt may take in all (default 30, connecting 5), a `Timeout`, or
            None for no limit at all.
        max_retries: how many times a failed request that is safe to resend is retried.
        retry_ambiguous: also retry failures after which the server may have recorded the
            message (read timeouts, dropped connections, 5xx). This can duplicate a message.
        http_client: a caller-owned `httpx2.AsyncClient` or `httpx.AsyncClient` (proxies, mTLS,
            HTTP/2, mocks). The SDK never closes it.
        default_headers: extra headers for every request.
        transport: ``"httpx2"`` (the default; asyncio and trio), ``"httpx"`` (httpx 0.28, if
            installed), ``"aiohttp"`` (asyncio only, the fastest for fan-out; extra
            ``[aiohttp]``), or a `Transport` instance.
        max_connections: how many requests may be in flight at once; further ones wait.
        max_response_bytes: the largest response body the SDK reads.
        rate_limiter: a `RateLimiter` every attempt of every turn waits on, fan-outs included
            (shareable between clients), or a `RedisRateLimiter` shared by a fleet of processes;
            any object with an ``async def acquire()`` will do.
        telemetry: where turns are reported. By default, OpenTelemetry (a span per turn and a
            duration histogram, through the global providers) when `opentelemetry-api` is
            installed, and nothing otherwise; an `OpenTelemetry` from `quickchat_async.otel`
            to choose providers or record content; None for nothing.

    Raises:
        ValidationError: no credential, both, no scenario_id, or a bad argument.
        ImportError: ``transport="aiohttp"`` (or ``"httpx"``) without the library installed.
        RuntimeError: ``transport="aiohttp"`` inside a trio event loop.
    """

    __slots__ = ()

    # --- conversations ------------------------------------------------------------------------

    def conversation(
        self,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> Conversation:
        """Start a conversation, or continue one whose `conv_id` you stored.

        Args:
            conv_id: an existing conversation to continue; None starts a new one on the first
                `say()`.
            kb_topic: the Knowledge Base topic to filter on; sent on every request.
            metadata: `client_metadata` sent with every message (with kb_topic, at most 5 keys).
            max_history: keep only the last N turns in `history` (None keeps all).

        Raises:
            ValidationError: on bad arguments.
        """
        return Conversation(
            self, conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )

    def resume(self, snapshot: Mapping[str, object]) -> Conversation:
        """Rebuild a conversation from `Conversation.snapshot()`, continuing the same conv_id.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        return Conversation.from_snapshot(self, snapshot)

    async def conversation_for(
        self,
        user_key: str,
        *,
        store: ConversationStore,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | NotGiven | None = NOT_GIVEN,
        lock_ttl: float | None = None,
        lock_timeout: float | None = None,
    ) -> StoredConversation:
        """Load a user's stored conversation, or start one; each turn is saved before it returns.

        Turns of one user key run one at a time, across tasks and, with a shared store, across
        processes and machines: two first messages from one user start one conversation.

        Args:
            user_key: whose conversation it is, in the app's terms (a chat ID, "telegram:42").
            store: where conversations live: `SQLiteStore` for one bot process, `RedisStore`
                for several workers, `MemoryStore` for tests.
            kb_topic: the Knowledge Base topic. It starts the user's conversation with it; for a
                stored one it replaces the topic from the next turn on.
            metadata: `client_metadata` for every message. It starts the user's conversation
                with it; for a stored one it replaces the stored metadata from the next turn on.
            max_history: how many turns the store keeps (default 100; None keeps all, 0 keeps
                only the conv_id).
            lock_ttl: seconds a turn's lock lives without renewal; by default, longer than this
                client's slowest turn (113 s with the default timeout and retries).
            lock_timeout: seconds a turn waits for the user's lock (default: twice lock_ttl).

        Raises:
            ValidationError: on bad arguments, or a kb_topic for a stored conversation that
                started without one.
            StoreError: the store failed, or the user's record is unreadable.
        """
        options = StoredOptions(
            kb_topic=kb_topic,
            metadata=metadata,
            max_history=max_history,
            lock_ttl=lock_ttl,
            lock_timeout=lock_timeout,
        )
        return await StoredConversation.open(self, user_key, store=store, options=options)

    # --- fan-out ------------------------------------------------------------------------------

    async def fan_out(
        self,
        jobs: Iterable[Job],
        *,
        concurrency: int = 64,
        rate_per_second: float | None = None,
        rate_per_minute: float | None = None,
        rate_limiter: Limiter | None = None,
        on_result: Callable[[FanOutResult], object] | None = None,
    ) -> list[FanOutResult]:
        """Run many conversations at once; return every job's result, in input order.

        Each job runs in a new conversation: a `Script` (or a list of texts) is said turn by
        turn; an ``async def job(conv)`` is awaited with the conversation. A job that fails
        gets its error in its result and never cancels the others.

        Args:
            jobs: the jobs; any iterable (a generator too: jobs are taken as workers free up).
            concurrency: how many jobs run at once. Requests in flight are also bounded by
                `max_connections`.
            rate_per_second: at most this many requests a second, retries included.
            rate_per_minute: at most this many requests a minute, retries included.
            rate_limiter: a `RateLimiter` (or `RedisRateLimiter`) to share between fan-outs,
                instead of the rates. The client's own limiter, if any, applies as well.
            on_result: called with each result as it arrives (a plain or an async function).

        Raises:
            ValidationError: a bad concurrency or rate.
        """
        options = FanOutOptions.of(
            concurrency=concurrency,
            rate_per_second=rate_per_second,
            rate_per_minute=rate_per_minute,
            rate_limiter=rate_limiter,
            on_result=on_result,
        )
        async with FanOut(self, jobs, options) as stream:
            results = [result async for result in stream]
        results.sort(key=lambda result: result.index)
        return results

    def fan_out_stream(
        self,
        jobs: Iterable[Job],
        *,
        concurrency: int = 64,
        rate_per_second: float | None = None,
        rate_per_minute: float | None = None,
        rate_limiter: Limiter | None = None,
        on_result: Callable[[FanOutResult], object] | None = None,
    ) -> FanOut:
        """Run many conversations at once, yielding results as they finish.

        Takes the same arguments as `fan_out`. Use it as::

            async with client.fan_out_stream(jobs, concurrency=32) as results:
                async for result in results:
                    print(result.index, result.ok)

        Leaving the block before the end cancels the jobs still running.

        Raises:
            ValidationError: a bad concurrency or rate.
        """
        options = FanOutOptions.of(
            concurrency=concurrency,
            rate_per_second=rate_per_second,
            rate_per_minute=rate_per_minute,
            rate_limiter=rate_limiter,
            on_result=on_result,
        )
        return FanOut(self, jobs, options)
