"""quickchat-async: an async Python SDK for Quickchat AI's Chat endpoint, on asyncio and trio.

Example::

    from quickchat_async import AsyncQuickchat

    async with AsyncQuickchat(token="...", scenario_id="...") as client:
        conv = client.conversation(kb_topic="billing")
        reply = await conv.say("Hello!")
        print(reply.text)

Synchronous code uses its blocking twin, `Quickchat`, the same way without `async` and `await`.
"""

from ._client import AsyncQuickchat
from ._config import Timeout
from ._conversation import Conversation
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConversationNotFoundError,
    EventLoopError,
    InternalServerError,
    PermissionDeniedError,
    QuickchatError,
    RateLimitError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    ServiceUnavailableError,
    StoreConflictError,
    StoreError,
    StoreLockTimeoutError,
    UnconfirmedStartError,
    UnexpectedResponseError,
    ValidationError,
)
from ._fanout import FanOut, FanOutResult, Job, Script
from ._logs import configure_from_env as _configure_logging
from ._models import HTTPResponse, Reply, Turn, TurnStatus, html_to_text
from ._ratelimit import Limiter, RateLimiter
from ._redis_limiter import RedisRateLimiter
from ._sender import AsyncSender
from ._stores import (
    ConversationStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    StoredConversation,
    StoreRecord,
)
from ._sync_client import Quickchat
from ._sync_conversation import SyncConversation
from ._sync_sender import SyncSender
from ._transports import (
    AiohttpTransport,
    BaseTransport,
    GeventTransport,
    Httpx2Transport,
    HttpxTransport,
    SyncBaseTransport,
    SyncHttpx2Transport,
    SyncHttpxTransport,
    SyncTransport,
    Transport,
)
from ._types import NOT_GIVEN, Flavor, JSONValue, NotGiven
from ._version import __version__
from ._wire import ChatRequest


__all__ = [
    "NOT_GIVEN",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AiohttpTransport",
    "AsyncQuickchat",
    "AsyncSender",
    "AuthenticationError",
    "BadRequestError",
    "BaseTransport",
    "ChatRequest",
    "ClientClosedError",
    "Conversation",
    "ConversationNotFoundError",
    "ConversationStore",
    "EventLoopError",
    "FanOut",
    "FanOutResult",
    "Flavor",
    "GeventTransport",
    "HTTPResponse",
    "Httpx2Transport",
    "HttpxTransport",
    "InternalServerError",
    "JSONValue",
    "Job",
    "Limiter",
    "MemoryStore",
    "NotGiven",
    "PermissionDeniedError",
    "Quickchat",
    "QuickchatError",
    "RateLimitError",
    "RateLimiter",
    "RedisRateLimiter",
    "RedisStore",
    "Reply",
    "ResponseTooLargeError",
    "SQLiteStore",
    "ScenarioNotFoundError",
    "Script",
    "ServiceUnavailableError",
    "StoreConflictError",
    "StoreError",
    "StoreLockTimeoutError",
    "StoreRecord",
    "StoredConversation",
    "SyncBaseTransport",
    "SyncConversation",
    "SyncHttpx2Transport",
    "SyncHttpxTransport",
    "SyncSender",
    "SyncTransport",
    "Timeout",
    "Transport",
    "Turn",
    "TurnStatus",
    "UnconfirmedStartError",
    "UnexpectedResponseError",
    "ValidationError",
    "__version__",
    "html_to_text",
]

_configure_logging()  # QUICKCHAT_LOG=info|debug, read once
