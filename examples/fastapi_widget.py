"""The web backend of a chat widget (FastAPI): `POST /messages` relays a visitor's message.

`POST /messages` with `{"user_id": "...", "text": "..."}` answers `{"reply": "..."}`. Each user
keeps one Quickchat conversation, stored in SQLite; "/reset" and "/topic <name>" work as text.
Failures are typed, for the widget to show and act on: `{"error": ..., "message": ...}` with

- 429 and `Retry-After` when Quickchat rate-limits (or the user's previous message is still
  being answered): try again later;
- 502 `outcome_unknown`: the message may have reached the Agent but no reply came: let the
  user decide whether to send it again, do not resend it automatically;
- 503, with `Retry-After` when Quickchat said, when Quickchat (or this backend) is unavailable;
- 422 when the request or the text cannot be sent.

The widget shows its own typing dots while the request is pending. The user_id is taken from
the body to keep the example short: in your app, take it from the session or the auth token,
or anyone can continue anyone's conversation.

    python examples/fastapi_widget.py
    curl -H 'content-type: application/json' \\
         -d '{"user_id": "u1", "text": "How do refunds work?"}' http://127.0.0.1:8000/messages

With no QUICKCHAT_API_TOKEN set it answers from the bundled emulator; set QUICKCHAT_API_TOKEN
(or QUICKCHAT_API_KEY) and QUICKCHAT_SCENARIO_ID for your AI Agent. BOT_DB names the SQLite
file (fastapi_widget.db), HOST and PORT where to listen (127.0.0.1:8000).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

from botkit import Chats, Outcome, make_client
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from quickchat_async import AsyncQuickchat, ConversationStore, SQLiteStore


class Message(BaseModel):
    """A message from the widget."""

    user_id: Annotated[str, Field(min_length=1, max_length=200)]
    text: Annotated[str, Field(min_length=1, max_length=4000)]


class Reply(BaseModel):
    """The AI Agent's reply, or a command's confirmation."""

    reply: str


class Problem(BaseModel):
    """Why there is no reply: `message` is for the user, `error` for the widget's code."""

    error: Literal["busy", "outcome_unknown", "unavailable", "refused"]
    message: str
    retry_after: int | None = None


STATUS = {
    Outcome.BUSY: 429,
    Outcome.MAYBE_LOST: 502,
    Outcome.UNAVAILABLE: 503,
    Outcome.REFUSED: 422,
}


def make_store() -> ConversationStore:
    """The conversations, in a SQLite file that outlives the process."""
    return SQLiteStore(os.environ.get("BOT_DB", "fastapi_widget.db"))


def create_app(
    make_client: Callable[[], AsyncQuickchat] = make_client,
    make_store: Callable[[], ConversationStore] = make_store,
) -> FastAPI:
    """The backend: one Quickchat client and one store, owned by the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Chats]]:
        chats = Chats(make_client(), make_store())
        try:
            yield {"chats": chats}  # every request's `request.state.chats`
        finally:
            await chats.aclose()  # once the requests in flight are answered

    app = FastAPI(title="Chat widget backend", lifespan=lifespan)
    problems = {status: {"model": Problem} for status in STATUS.values()}

    @app.post("/messages", response_model=Reply, responses=problems)
    async def post_message(message: Message, request: Request) -> Reply | JSONResponse:
        chats: Chats = request.state.chats
        key = f"web:{message.user_id}"
        async with chats.in_order(key):  # a user's messages are answered one at a time
            answer = await chats.answer(key, message.text)
        if answer.outcome is Outcome.OK:
            return Reply(reply=answer.text)
        retry_after = math.ceil(answer.retry_after) if answer.retry_after is not None else None
        problem = Problem(error=answer.outcome.value, message=answer.text, retry_after=retry_after)
        return JSONResponse(
            problem.model_dump(),
            status_code=STATUS[answer.outcome],
            headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
        )

    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    uvicorn.run(app, host=host, port=port)
