"""Conversation stores: a user's conversation that outlives the process.

`_base` holds the protocol, the record format and the locks every store shares; one module per
backend (`_memory`, `_sqlite`, `_redis`) implements them; `_conversation` holds the
`StoredConversation` that drives a store, turn by turn.
"""

from ._base import ConversationStore, StoreRecord
from ._conversation import StoredConversation
from ._memory import MemoryStore
from ._redis import RedisStore
from ._sqlite import SQLiteStore


__all__ = [
    "ConversationStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "StoreRecord",
    "StoredConversation",
]
