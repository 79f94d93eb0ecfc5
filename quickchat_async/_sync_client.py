"""`Quickchat`: the blocking client, for synchronous code (Django, Flask, Celery, Locust...)."""

from __future__ import annotations

from collections.abc import Mapping

from ._sync_conversation import SyncConversation
from ._sync_sender import SyncSender
from ._types import JSONValue


__all__ = ["Quickchat"]


class Quickchat(SyncSender):
    """A blocking client for Quickchat AI's Chat endpoint: the twin of `AsyncQuickchat`.

    It takes the same arguments and environment variables (`QUICKCHAT_API_TOKEN`,
    `QUICKCHAT_API_KEY`, `QUICKCHAT_SCENARIO_ID`, `QUICKCHAT_BASE_URL`), raises the same errors,
    retries the same failures, and its conversations keep the same state, in the same snapshot
    format. One client may be shared by many threads; each request waits for one of its
    `max_connections` slots.

    Use it as a context manager, or call `close()` when done. Stores and fan-out are async
    only: see the docs for keeping `snapshot()` in your own database.

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
        http_client: a caller-owned `httpx2.Client` or `httpx.Client` (proxies, mTLS, mocks).
            The SDK never closes it.
        default_headers: extra headers for every request.
        transport: ``"httpx2"`` (the default), ``"httpx"`` (httpx 0.28, if installed),
            ``"gevent"`` (geventhttpclient, for programs under gevent's monkey-patching such
            as Locust; extra ``[locust]``), or a `SyncTransport` instance.
        max_connections: how many requests may be in flight at once; further ones wait.
        max_response_bytes: the largest response body the SDK reads.

    Raises:
        ValidationError: no credential, both, no scenario_id, or a bad argument.
        ImportError: ``transport="httpx"`` or ``"gevent"`` without the library installed.
        RuntimeError: ``transport="gevent"`` in a program gevent has not monkey-patched.
    """

    __slots__ = ()

    def conversation(
        self,
        *,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> SyncConversation:
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
        return SyncConversation(
            self, conv_id=conv_id, kb_topic=kb_topic, metadata=metadata, max_history=max_history
        )

    def resume(self, snapshot: Mapping[str, object]) -> SyncConversation:
        """Rebuild a conversation from `snapshot()`, continuing the same conv_id.

        The snapshot may come from a `SyncConversation` or from an async `Conversation`.

        Raises:
            ValidationError: when the snapshot is not one this SDK wrote.
        """
        return SyncConversation.from_snapshot(self, snapshot)
