"""A local, Quickchat-compatible Chat endpoint, for tests, demos and reliability drills.

One pure core, two adapters:

```
EmulatorService.handle_chat(headers, body) -> Outcome      the API's rules, record, faults
 ├── EmulatorTransport(service)   httpx2 transport, in process, no socket (asyncio and trio)
 ├── SyncEmulatorTransport(...)   its blocking twin, for httpx2.Client (threads, gevent)
 └── create_app(service)          Starlette app; serve()/run() put it on uvicorn
```

The core (`EmulatorService`) checks a `POST /chat` request in either flavor (Bearer token, or
legacy `api_key` in the body), answers with the documented JSON or the documented plain-text
errors (`ErrorText`), records every message (`conversations()`, `messages(conv_id)`), replies
from a small Knowledge Base (`KnowledgeBase`, filtered by `client_metadata.kb_topic`) and
injects faults (`service.faults`, `FaultKind`). It does no I/O: its `Outcome` says what to send
and how (respond, drop the connection, cut the body, drip it...), and each adapter enacts that.

The core and the in-process transports need only httpx2, attrs and anyio; `create_app`,
`serve`, `aserve` and `run` need the `emulator` extra (Starlette and uvicorn), imported on
first use.

```python
service = EmulatorService(scenarios=[Scenario("scn", tokens=["tok"])])
async with httpx2.AsyncClient(transport=EmulatorTransport(service)) as http:
    r = await http.post("http://emulator/chat", json={"scenario_id": "scn", "text": "Hi"},
                        headers={"Authorization": "Bearer tok"})

with serve(service) as server:          # uvicorn in a thread, on 127.0.0.1
    service.faults.script(["drop_after", None])
    httpx2.post(f"{server.base_url}/chat", ...)
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import ErrorText
from ._faults import Fault, FaultInjector, FaultKind
from ._kb import Article, KnowledgeBase, KnowledgeBaseError, bundled_kb, load_kb
from ._outcome import Action, Outcome
from ._service import (
    DEMO_SCENARIO,
    EmulatorService,
    Flavor,
    RecordedConversation,
    RecordedMessage,
    Role,
    Scenario,
    Stats,
)
from ._transport import EmulatorTransport, SyncEmulatorTransport


if TYPE_CHECKING:
    from ._asgi import create_app
    from ._server import ServerHandle, aserve, run, serve

__all__ = [
    "DEMO_SCENARIO",
    "Action",
    "Article",
    "EmulatorService",
    "EmulatorTransport",
    "ErrorText",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Flavor",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Outcome",
    "RecordedConversation",
    "RecordedMessage",
    "Role",
    "Scenario",
    "ServerHandle",
    "Stats",
    "SyncEmulatorTransport",
    "aserve",
    "bundled_kb",
    "create_app",
    "load_kb",
    "run",
    "serve",
]

# The served half needs the `emulator` extra; import it only when asked for.
_NEEDS_EXTRA = {
    "create_app": "_asgi",
    "ServerHandle": "_server",
    "aserve": "_server",
    "run": "_server",
    "serve": "_server",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401 -- whatever the module holds
    module = _NEEDS_EXTRA.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        imported = importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise ImportError(
            f"quickchat_async.emulator.{name} needs Starlette and uvicorn: "
            "pip install 'quickchat-async[emulator]'."
        ) from exc
    return getattr(imported, name)
