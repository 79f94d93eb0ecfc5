"""A web backend endpoint that relays a site visitor's message to the AI Agent (Starlette).

`POST /chat` with `{"message": "..."}` answers `{"reply": "..."}`. Each visitor is known by a
cookie, set on their first message, and keeps one conversation: the store holds its conv_id
and history, and turns of one visitor run one at a time even when their browser sends two
messages at once. The browser never sees your token, nor the conv_id.

With no credentials set it talks to the bundled emulator, in process. Set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID for your AI Agent. Conversations live in
memory here; use `SQLiteStore("relay.db")` to keep them across restarts, or `RedisStore` when
several workers serve the site.

    python examples/starlette_relay.py          # or: uvicorn examples.starlette_relay:app
    curl -c jar -b jar -H 'content-type: application/json' \\
         -d '{"message": "How do refunds work?"}' http://127.0.0.1:8000/chat
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quickchat_async import (
    AsyncQuickchat,
    ConversationStore,
    MemoryStore,
    QuickchatError,
    RateLimitError,
    ServiceUnavailableError,
    StoreLockTimeoutError,
    ValidationError,
)
from quickchat_async.testing import Emulator


COOKIE = "visitor"
#: The longest message a visitor may send, in characters.
MAX_MESSAGE = 2000


def make_client() -> AsyncQuickchat:
    """Your AI Agent when QUICKCHAT_* credentials are set, else the emulator, in process."""
    if os.environ.get("QUICKCHAT_API_TOKEN") or os.environ.get("QUICKCHAT_API_KEY"):
        return AsyncQuickchat()
    print("(no QUICKCHAT_API_TOKEN set: talking to the bundled emulator)", file=sys.stderr)
    return Emulator().client()


def create_app(
    make_client: Callable[[], AsyncQuickchat] = make_client,
    make_store: Callable[[], ConversationStore] = MemoryStore,
) -> Starlette:
    """The relay: one client and one store for the app's lifetime, shared by every request."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with make_client() as client:
            store = make_store()
            try:
                app.state.client, app.state.store = client, store
                yield
            finally:
                await store.aclose()

    async def chat(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
            return JSONResponse({"error": "Send {'message': '...'}, a non-empty text."}, 400)

        visitor = request.cookies.get(COOKIE) or secrets.token_urlsafe(16)
        client: AsyncQuickchat = request.app.state.client
        try:
            conv = await client.conversation_for(
                f"web:{visitor}", store=request.app.state.store, metadata={"channel": "web"}
            )
            reply = await conv.say(message)
        except ValidationError as exc:
            response = JSONResponse({"error": exc.message}, 400)
        except (RateLimitError, ServiceUnavailableError, StoreLockTimeoutError):
            response = JSONResponse({"error": "Busy, please try again in a moment."}, 503)
        except QuickchatError as exc:
            # Logged for you; the visitor gets no internals.
            print(f"relay: {type(exc).__name__}: {exc.message}", file=sys.stderr)
            response = JSONResponse({"error": "Sorry, something went wrong."}, 502)
        else:
            response = JSONResponse({"reply": reply.text})
        response.set_cookie(COOKIE, visitor, httponly=True, samesite="lax", max_age=30 * 86400)
        return response

    return Starlette(routes=[Route("/chat", chat, methods=["POST"])], lifespan=lifespan)


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
