"""Fault injection: the ways a real Chat endpoint (or the network in front of it) misbehaves.

A fault is drawn for each `/chat` request, first from the *script* (a FIFO of the next
requests' faults, `None` meaning "behave"), then, once the script is empty, from the *rates*
(a probability per fault, drawn with a seeded RNG so a run can be replayed).

Faults come in two families. The first fires *before* the turn: the request is not even
validated, nothing is recorded. The second fires *after* the turn was recorded (the user
message and the reply are in the record, ord_number advanced), so a client that resends
creates a duplicate; such a fault drawn for a request the core rejects (a 4xx) is used up
and the rejection goes out unchanged.

| kind             | when   | what the client gets                                            |
|------------------|--------|-----------------------------------------------------------------|
| `rate_limit`     | before | 429 `Too Many Requests`, `Retry-After`                          |
| `unavailable`    | before | 503 `Service Unavailable`, `Retry-After`                        |
| `error_before`   | before | 500 `Internal Server Error`                                     |
| `drop_before`    | before | the connection closes, no response                              |
| `html_502`       | before | 502 with nginx's HTML page                                      |
| `error_after`    | after  | 500 `Internal Server Error`                                     |
| `drop_after`     | after  | the connection closes, no response                              |
| `truncated`      | after  | 200 headers, half the body, then the connection closes (FIN)    |
| `reset_mid_body` | after  | 200 headers, half the body, then a TCP reset (RST)              |
| `not_json`       | after  | 200 with an HTML body                                           |
| `missing_reply`  | after  | 200 JSON without `reply`                                        |
| `slow_headers`   | after  | the normal reply, `delay` seconds late (5 s unless set)         |
| `drip`           | after  | the normal reply, `chunk_size` bytes every `interval` seconds   |
| `huge_body`      | after  | 200 JSON whose `reply` makes the body `size` bytes (4 MiB)      |
| `endless`        | after  | 200 JSON that never ends (chunked, `filler` every `interval`)   |

Every fault may also wait `delay` seconds before acting. What each kind sends is
`fault_outcome`'s business (in `_outcome`); this module only describes and draws faults.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import enum
import math
import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias, cast

import attrs


__all__ = ["Fault", "FaultInjector", "FaultKind", "FaultLike", "as_fault"]


class FaultKind(str, enum.Enum):
    """The kinds of fault; the values are stable names for scripts, JSON and the CLI."""

    RATE_LIMIT = "rate_limit"
    UNAVAILABLE = "unavailable"
    ERROR_BEFORE = "error_before"
    DROP_BEFORE = "drop_before"
    HTML_502 = "html_502"
    ERROR_AFTER = "error_after"
    DROP_AFTER = "drop_after"
    TRUNCATED = "truncated"
    RESET_MID_BODY = "reset_mid_body"
    NOT_JSON = "not_json"
    MISSING_REPLY = "missing_reply"
    SLOW_HEADERS = "slow_headers"
    DRIP = "drip"
    HUGE_BODY = "huge_body"
    ENDLESS = "endless"

    @property
    def records_turn(self) -> bool:
        """Whether the turn is recorded before this fault fires."""
        return self not in _BEFORE

    @classmethod
    def parse(cls, name: str) -> FaultKind:
        """The kind called `name`.

        Raises:
            ValueError: no such kind; the message lists them.
        """
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(k.value for k in cls)
            raise ValueError(f"Unknown fault kind {name!r}; choose one of: {names}.") from None


_BEFORE = frozenset(
    {
        FaultKind.RATE_LIMIT,
        FaultKind.UNAVAILABLE,
        FaultKind.ERROR_BEFORE,
        FaultKind.DROP_BEFORE,
        FaultKind.HTML_502,
    }
)


def _kind(value: FaultKind | str) -> FaultKind:
    return value if isinstance(value, FaultKind) else FaultKind.parse(value)


def _retry_after(value: str | float | dt.datetime | None) -> str | None:
    """Any way of saying Retry-After, as the header's text (which may be deliberately wrong)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)
    return f"{value:g}"


def _default_delay(fault: Fault) -> float:
    return 5.0 if fault.kind is FaultKind.SLOW_HEADERS else 0.0


def _default_chunk_size(fault: Fault) -> int:
    return 16 * 1024 if fault.kind is FaultKind.ENDLESS else 8


def _default_interval(fault: Fault) -> float:
    return {
        FaultKind.DRIP: 0.25,
        FaultKind.ENDLESS: 0.01,
        FaultKind.TRUNCATED: 0.05,
        FaultKind.RESET_MID_BODY: 0.05,
    }.get(fault.kind, 0.0)


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, not {value}.")


_POSITIVE = attrs.validators.ge(1)


@attrs.frozen
class Fault:
    """One fault, with its parameters; a kind alone takes the defaults below.

    Attributes:
        kind: what goes wrong.
        delay: seconds to wait before acting (for `slow_headers`, how late the headers are;
            5 s by default).
        retry_after: the `Retry-After` of `rate_limit` and `unavailable`: seconds, a datetime
            (sent as an HTTP date) or any text, even garbage or a negative number; None sends
            no header.
        chunk_size: `drip`: bytes per chunk (8); `endless`: filler bytes per chunk (16 KiB).
        interval: `drip`: seconds between chunks (0.25); `endless`: between filler chunks
            (0.01); `truncated`/`reset_mid_body`: between the partial body and the cut (0.05).
        size: `huge_body`: the body's size in bytes (4 MiB).
    """

    kind: FaultKind = attrs.field(converter=_kind)
    delay: float = attrs.field(
        default=attrs.Factory(_default_delay, takes_self=True), kw_only=True, validator=_seconds
    )
    retry_after: str | None = attrs.field(default="1", converter=_retry_after, kw_only=True)
    chunk_size: int = attrs.field(
        default=attrs.Factory(_default_chunk_size, takes_self=True),
        kw_only=True,
        validator=_POSITIVE,
    )
    interval: float = attrs.field(
        default=attrs.Factory(_default_interval, takes_self=True), kw_only=True, validator=_seconds
    )
    size: int = attrs.field(default=4 * 1024 * 1024, kw_only=True, validator=_POSITIVE)

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """A fault from its JSON form: a kind's name, or an object `{"kind": ..., ...}`.

        Raises:
            ValueError: unknown kind or field, or a field of the wrong type.
        """
        if isinstance(data, str):
            return cls(data)
        fields = cast("dict[str, Any]", data) if isinstance(data, dict) else {}
        _require(
            isinstance(fields.get("kind"), str),
            f"A fault is a kind's name or an object with a 'kind', not {data!r}.",
        )
        unknown = sorted(set(fields) - {a.name for a in attrs.fields(cls)})
        _require(not unknown, f"Unknown fault field(s): {', '.join(unknown)}.")
        for name, value in fields.items():
            _check_json_type(name, value)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `from_json` reads."""
        return attrs.asdict(self)


def _require(condition: bool, message: str) -> None:
    """Reject malformed JSON input with a ValueError saying what is wrong."""
    if not condition:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_json_type(name: str, value: object) -> None:
    if name == "kind":
        ok = isinstance(value, str)
    elif name == "retry_after":
        ok = value is None or isinstance(value, str) or _is_number(value)
    elif name in {"chunk_size", "size"}:
        ok = _is_int(value)
    else:
        ok = _is_number(value)
    _require(ok, f"Fault field {name!r} has the wrong type: {value!r}.")


#: What may stand for a fault: the fault, its kind, or the kind's name.
FaultLike: TypeAlias = "Fault | FaultKind | str"


def as_fault(value: FaultLike) -> Fault:
    """The `Fault` that `value` stands for."""
    return value if isinstance(value, Fault) else Fault(value)


def _rate_table(rates: Mapping[FaultLike, float]) -> tuple[tuple[Fault, float], ...]:
    table = tuple((as_fault(f), float(p)) for f, p in rates.items())
    for fault, p in table:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"The rate of {fault.kind.value} must be within [0, 1], not {p}.")
    if math.fsum(p for _, p in table) > 1.0 + 1e-9:
        raise ValueError("Fault rates add up to more than 1.")
    return table


class FaultInjector:
    """Decides the fault of each request, from a script first, then from rates.

    Thread-safe: tests script faults from their own thread while the server draws them.

    Args:
        rates: probability per fault (or kind), each in [0, 1], adding up to at most 1.
        seed: seeds the RNG that draws from the rates, to replay a run.
    """

    def __init__(
        self, rates: Mapping[FaultLike, float] | None = None, *, seed: int | None = None
    ) -> None:
        self._rates = _rate_table(rates or {})
        self._rng = random.Random(seed)  # noqa: S311 -- reproducible, not secret
        self._script: collections.deque[Fault | None] = collections.deque()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<FaultInjector pending={len(self._script)} rates={len(self._rates)}>"

    def script(self, faults: Iterable[FaultLike | None]) -> None:
        """Queue the faults of the next requests, one per `/chat` request; None means none.

        Entries are appended after those still pending.
        """
        entries = [None if f is None else as_fault(f) for f in faults]
        with self._lock:
            self._script.extend(entries)

    def set_rates(self, rates: Mapping[FaultLike, float], *, seed: int | None = None) -> None:
        """Replace the rates: the probability of each fault, for requests the script leaves.

        Args:
            rates: probability per fault (or kind), each in [0, 1], adding up to at most 1.
            seed: reseed the RNG, to replay the same sequence of faults.

        Raises:
            ValueError: a rate is out of range or they add up to more than 1.
        """
        table = _rate_table(rates)
        with self._lock:
            self._rates = table
            if seed is not None:
                self._rng.seed(seed)

    def clear(self) -> None:
        """Drop the pending script and the rates."""
        with self._lock:
            self._script.clear()
            self._rates = ()

    def clear_script(self) -> None:
        """Drop the pending script; the rates stay."""
        with self._lock:
            self._script.clear()

    @property
    def pending(self) -> tuple[Fault | None, ...]:
        """The scripted faults not used yet, next first."""
        with self._lock:
            return tuple(self._script)

    @property
    def rates(self) -> tuple[tuple[Fault, float], ...]:
        """The current rates, as (fault, probability) pairs."""
        with self._lock:
            return self._rates

    def next_fault(self) -> Fault | None:
        """Use up the fault of one request: the next scripted entry, else a draw from the rates."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if not self._rates:
                return None
            draw = self._rng.random()
            for fault, p in self._rates:
                if draw < p:
                    return fault
                draw -= p
            return None

    def configure(self, data: object) -> None:
        """Apply a JSON command, as `POST /_emulator/faults` receives it.

        `{"clear": true, "script": [...], "rates": {"kind": p}, "seed": 1}`, all optional:
        `clear` empties script and rates first, `script` appends, `rates` replaces.

        Raises:
            ValueError: the command is malformed; nothing was changed.
        """
        _require(isinstance(data, dict), "The faults command must be a JSON object.")
        command = cast("dict[str, object]", data)
        unknown = sorted(set(command) - {"clear", "script", "rates", "seed"})
        _require(not unknown, f"Unknown faults command field(s): {', '.join(unknown)}.")
        clear, script, rates, seed = (command.get(k) for k in ("clear", "script", "rates", "seed"))
        _require(clear is None or isinstance(clear, bool), "'clear' must be true or false.")
        _require(script is None or isinstance(script, list), "'script' must be a list.")
        _require(rates is None or isinstance(rates, dict), "'rates' must be an object.")
        _require(seed is None or _is_int(seed), "'seed' must be an integer.")
        entries = [
            None if f is None else Fault.from_json(f) for f in cast("list[object]", script or [])
        ]
        table: dict[FaultLike, float] = {}
        for name, p in cast("dict[str, object]", rates or {}).items():
            _require(_is_number(p), f"The rate of {name!r} must be a number.")
            table[FaultKind.parse(name)] = float(cast("float", p))
        checked = _rate_table(table)
        if clear:
            self.clear()
        if rates is not None:
            self.set_rates(dict(checked), seed=cast("int | None", seed))
        elif seed is not None:
            with self._lock:
                self._rng.seed(cast("int", seed))
        self.script(entries)

    def to_dict(self) -> dict[str, Any]:
        """The state, as `GET /_emulator/faults` shows it."""
        with self._lock:
            return {
                "pending": [None if f is None else f.to_dict() for f in self._script],
                "rates": [{"fault": f.to_dict(), "rate": p} for f, p in self._rates],
            }
