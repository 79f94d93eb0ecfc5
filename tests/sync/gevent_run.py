"""Run the blocking client under gevent's monkey-patching, as Locust does; print JSON results.

Run by `test_gevent.py` in a subprocess (monkey-patching a pytest process would patch every
other test too): ``python -m tests.sync.gevent_run MODE TRANSPORT``, with the served emulator's
URL and the canary credentials in the `QUICKCHAT_*` variables.

Modes:
    one-conversation: 20 greenlets send the first message of one conversation at once.
    concurrency: 20 greenlets, each in its own conversation, against replies 0.3 s late.
    cases: the fault table of `cases.py`, scripted through the emulator's HTTP routes.
"""

# Patching comes first, before anything imports socket, ssl or threading.
from gevent import monkey


monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import httpx2  # noqa: E402
import stamina  # noqa: E402

from quickchat_async import Quickchat  # noqa: E402

from .cases import CASES, play  # noqa: E402


BASE_URL = os.environ["QUICKCHAT_BASE_URL"]


def emulator(method: str, path: str, payload: object = None) -> Any:
    """Call one of the emulator's `/_emulator` routes."""
    response = httpx2.request(method, f"{BASE_URL}/_emulator/{path}", json=payload, timeout=10)
    response.raise_for_status()
    return response.json()


def one_conversation(transport: str) -> dict[str, Any]:
    with Quickchat(transport=transport) as client:
        conv = client.conversation(kb_topic="billing")
        greenlets = [gevent.spawn(conv.say, f"hello from greenlet {n}") for n in range(20)]
        gevent.joinall(greenlets, timeout=30, raise_error=True)
        conv_ids = sorted({greenlet.value.conv_id for greenlet in greenlets})
    recorded = emulator("GET", "conversations")["conversations"]
    return {
        "reply_conv_ids": conv_ids,
        "conv_id": conv.conv_id,
        "history": len(conv.history),
        "server_conversations": [
            {
                "conv_id": c["conv_id"],
                "user_messages": sum(m["role"] == "user" for m in c["messages"]),
            }
            for c in recorded
        ],
    }


def concurrency(transport: str) -> dict[str, Any]:
    emulator("POST", "faults", {"script": [{"kind": "slow_headers", "delay": 0.3}] * 20})
    with Quickchat(transport=transport) as client:
        start = time.monotonic()
        greenlets = [gevent.spawn(client.conversation().say, f"user {n}") for n in range(20)]
        gevent.joinall(greenlets, timeout=30, raise_error=True)
        elapsed = time.monotonic() - start
    return {"replies": sum(g.value is not None for g in greenlets), "elapsed": elapsed}


def cases(transport: str) -> list[dict[str, Any]]:
    results = []
    for case in CASES:
        emulator("POST", "reset")
        emulator("POST", "faults", {"clear": True, "script": list(case.script)})
        outcome = play(case, lambda **options: Quickchat(transport=transport, **options))
        stats = emulator("GET", "stats")
        results.append(
            {
                "name": case.name,
                "error": outcome.error,
                "unknown": outcome.unknown,
                "message": outcome.message,
                "formatted": outcome.formatted,
                "elapsed": outcome.elapsed,
                "requests": stats["requests"],
                "recorded": stats["turns"],
            }
        )
    return results


def main() -> None:
    mode, transport = sys.argv[1:3]
    stamina.set_testing(True, attempts=100, cap=True)  # as in the test suite: no backoff sleeps
    run = {"one-conversation": one_conversation, "concurrency": concurrency, "cases": cases}
    result = run[mode](transport)
    sys.stdout.write(json.dumps({"patched": monkey.is_module_patched("socket"), "result": result}))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
