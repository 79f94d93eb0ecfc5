"""A Chat endpoint at the seam: an `httpx2.MockTransport` that records what the SDK sent."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import httpx2


TOKEN = "tok-CANARY-current-7f3a9c"
API_KEY = "key-CANARY-legacy-51d0e2"
SCENARIO_ID = "scn-42"


def reply(conv_id: str = "conv-1", text: str = "Hi there!", ord_number: int = 3) -> httpx2.Response:
    """A 200 as the Chat endpoint sends it."""
    return httpx2.Response(200, json={"reply": text, "conv_id": conv_id, "ord_number": ord_number})


@attrs.define
class Sent:
    """One request the SDK sent, and when (on the event loop's clock)."""

    request: httpx2.Request
    at: float

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.request.content)  # type: ignore[no-any-return]

    @property
    def timeout(self) -> dict[str, float | None]:
        return self.request.extensions["timeout"]  # type: ignore[no-any-return]


Answer = httpx2.Response | Callable[[httpx2.Request], httpx2.Response] | BaseException


@attrs.define
class Wire:
    """Answers each request with the next scripted answer (a reply when none is left).

    An answer is a response, a function of the request, or an exception to raise (such as
    `httpx2.ConnectError`, a message that never left).
    """

    answers: deque[Answer] = attrs.Factory(deque)
    sent: list[Sent] = attrs.Factory(list)

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append(Sent(request, anyio.current_time()))
        answer = self.answers.popleft() if self.answers else reply()
        if isinstance(answer, BaseException):
            raise answer
        return answer(request) if callable(answer) else answer

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))
