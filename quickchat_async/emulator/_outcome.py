"""What the service core decides, and the I/O adapters enact: an `Outcome`.

The core never touches a socket. It returns a status, headers and body, plus an `Action` that
says *how* to deliver them, because a flaky server is not only a matter of what it answers:

- `RESPOND`: send the response.
- `DROP`: close the connection without sending anything (status 0, no headers, no body).
- `TRUNCATE`: send the headers (whose Content-Length announces the whole body) and the first
  `cut_after` body bytes, wait `interval`, then close the connection cleanly (FIN).
- `RESET`: the same, but end with a TCP reset (RST).
- `DRIP`: send the headers, then the body `chunk_size` bytes at a time, `interval` apart.
- `ENDLESS`: send the headers (no Content-Length), the body, then `filler` every `interval`
  seconds until the client goes away.

Every action starts after `delay` seconds ("slow headers" is `RESPOND` with a delay).

`fault_outcome` says what each injected fault (`_faults`) sends: faults are described there,
and turned into outcomes here, so the two modules point one way.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ErrorText
from ._faults import Fault, FaultKind


__all__ = ["Action", "Outcome", "dump_json", "fault_outcome", "json_outcome", "text_outcome"]

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

#: The page nginx sends when its upstream fails, byte for byte.
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_NOT_JSON_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
    "<body><p>It works!</p></body></html>\n"
)


class Action(str, enum.Enum):
    """How an adapter delivers an `Outcome`; see the module docstring."""

    RESPOND = "respond"
    DROP = "drop"
    TRUNCATE = "truncate"
    RESET = "reset"
    DRIP = "drip"
    ENDLESS = "endless"


@attrs.frozen(kw_only=True)
class Outcome:
    """What to send back for one request, and how.

    Attributes:
        status: the HTTP status; 0 when the action is `DROP` (nothing is sent).
        headers: the response headers, Content-Length included (except for `ENDLESS`).
        body: the response body (for `TRUNCATE` and `RESET`, the whole body that was announced).
        action: how to deliver it.
        delay: seconds to wait before doing anything (before the headers).
        cut_after: `TRUNCATE`/`RESET`: how many body bytes go out before the cut.
        chunk_size: `DRIP`: bytes per chunk.
        interval: `DRIP`/`ENDLESS`: seconds between chunks; `TRUNCATE`/`RESET`: seconds between
            the partial body and the cut, so that the client has read it.
        filler: `ENDLESS`: the bytes repeated after the body.
        fault: the fault that shaped this outcome, if any.
        conv_id: the conversation in which this request recorded a turn, if it did.
        ord_number: the ord_number of the recorded reply, if a turn was recorded.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    action: Action = Action.RESPOND
    delay: float = 0.0
    cut_after: int = 0
    chunk_size: int = 0
    interval: float = 0.0
    filler: bytes = b""
    fault: FaultKind | None = None
    conv_id: str | None = None
    ord_number: int | None = None

    @property
    def recorded(self) -> bool:
        """Whether the request recorded a turn (user message and reply)."""
        return self.ord_number is not None

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:  # noqa: ANN401 -- JSON is any
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def dump_json(data: object) -> bytes:
    """Encode JSON as the emulator sends it: ASCII-safe, so any user text survives."""
    return json.dumps(data, ensure_ascii=True).encode("ascii")


def _with_length(content_type: str, body: bytes) -> tuple[tuple[str, str], ...]:
    return (("content-type", content_type), ("content-length", str(len(body))))


def text_outcome(
    status: int, text: str, *, content_type: str = _TEXT, headers: tuple[tuple[str, str], ...] = ()
) -> Outcome:
    """A plain-text (or other text) response; unencodable characters are replaced."""
    body = text.encode("utf-8", "replace")
    return Outcome(status=status, headers=_with_length(content_type, body) + headers, body=body)


def json_outcome(status: int, data: object) -> Outcome:
    """A JSON response."""
    body = dump_json(data)
    return Outcome(status=status, headers=_with_length(_JSON, body), body=body)


def fault_outcome(fault: Fault, reply: Mapping[str, Any] | None) -> Outcome:  # noqa: C901, PLR0911 -- one branch per kind
    """What a fault sends.

    Args:
        fault: the fault.
        reply: the JSON the request would have been answered with, for faults that fire after
            the turn was recorded; None for the others.
    """
    kind = fault.kind
    if kind is FaultKind.RATE_LIMIT:
        return text_outcome(429, ErrorText.TOO_MANY_REQUESTS, headers=_retry(fault))
    if kind is FaultKind.UNAVAILABLE:
        return text_outcome(503, ErrorText.SERVICE_UNAVAILABLE, headers=_retry(fault))
    if kind in {FaultKind.ERROR_BEFORE, FaultKind.ERROR_AFTER}:
        return text_outcome(500, ErrorText.INTERNAL_SERVER_ERROR)
    if kind in {FaultKind.DROP_BEFORE, FaultKind.DROP_AFTER}:
        return Outcome(status=0, action=Action.DROP)
    if kind is FaultKind.HTML_502:
        return text_outcome(502, NGINX_502, content_type="text/html")
    if reply is None:
        raise ValueError(f"The {kind.value} fault needs the reply it alters.")
    normal = json_outcome(200, dict(reply))
    if kind is FaultKind.TRUNCATED or kind is FaultKind.RESET_MID_BODY:
        action = Action.TRUNCATE if kind is FaultKind.TRUNCATED else Action.RESET
        return attrs.evolve(
            normal, action=action, cut_after=len(normal.body) // 2, interval=fault.interval
        )
    if kind is FaultKind.NOT_JSON:
        return text_outcome(200, _NOT_JSON_PAGE, content_type="text/html; charset=utf-8")
    if kind is FaultKind.MISSING_REPLY:
        return json_outcome(200, {k: v for k, v in reply.items() if k != "reply"})
    if kind is FaultKind.SLOW_HEADERS:
        return normal  # the fault's delay is the point
    if kind is FaultKind.DRIP:
        return attrs.evolve(
            normal, action=Action.DRIP, chunk_size=fault.chunk_size, interval=fault.interval
        )
    if kind is FaultKind.HUGE_BODY:
        padding = "." * max(fault.size - len(normal.body), 0)
        return json_outcome(200, {**reply, "reply": f"{reply.get('reply', '')}{padding}"})
    # ENDLESS: a reply whose JSON string opens and never closes.
    return Outcome(
        status=200,
        headers=(("content-type", "application/json"),),
        body=b'{"reply": "',
        action=Action.ENDLESS,
        interval=fault.interval,
        filler=b"." * fault.chunk_size,
    )


def _retry(fault: Fault) -> tuple[tuple[str, str], ...]:
    return () if fault.retry_after is None else (("retry-after", fault.retry_after),)
