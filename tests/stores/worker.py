"""A bot worker process for the multi-process tests: JSON lines in, JSON lines out.

    python worker.py STORE [LOCK_TTL]

The Chat endpoint and credentials come from QUICKCHAT_BASE_URL, QUICKCHAT_API_TOKEN and
QUICKCHAT_SCENARIO_ID (the tests point them at the emulator served on 127.0.0.1). STORE is
`sqlite:PATH` or `redis:URL|PREFIX`. The worker prints `{"ready": true}`, then handles every
line of stdin concurrently, as a bot handles messages:

- `{"id": 1, "op": "say", "user": "u", "text": "hi"}` answers `{"id": 1, "ok": true, "conv_id":
  ..., "ord_number": ..., "history": [texts]}`, or `{"id": 1, "ok": false, "error": "..."}`;
- `{"id": 2, "op": "show", "user": "u"}` answers with the stored `conv_id` and `history`.

It exits when stdin closes and every message is answered.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from quickchat_async import AsyncQuickchat, QuickchatError, RedisStore, SQLiteStore


def open_store(spec: str) -> SQLiteStore | RedisStore:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        return SQLiteStore(where)
    url, _, prefix = where.partition("|")
    return RedisStore(url, prefix=prefix)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def handle(
    client: AsyncQuickchat,
    store: SQLiteStore | RedisStore,
    request: dict[str, Any],
    lock_ttl: float | None,
) -> None:
    answer: dict[str, Any] = {"id": request.get("id"), "ok": True}
    try:
        conv = await client.conversation_for(request["user"], store=store, lock_ttl=lock_ttl)
        if request["op"] == "say":
            reply = await conv.say(request["text"])
            answer["ord_number"] = reply.ord_number
        answer["conv_id"] = conv.conv_id
        answer["history"] = [turn.text for turn in conv.history]
    except QuickchatError as exc:
        answer.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    emit(answer)


async def main(store_spec: str, lock_ttl: float | None) -> None:
    stdin = anyio.wrap_file(sys.stdin)
    async with (
        AsyncQuickchat(max_retries=0) as client,
        open_store(store_spec) as store,
        anyio.create_task_group() as tasks,
    ):
        emit({"ready": True})
        async for line in stdin:
            if line.strip():
                tasks.start_soon(handle, client, store, json.loads(line), lock_ttl)


if __name__ == "__main__":
    ttl = float(sys.argv[2]) if len(sys.argv) > 2 else None
    anyio.run(main, sys.argv[1], ttl, backend="asyncio")
