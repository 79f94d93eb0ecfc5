"""The emulator's service core: the Chat endpoint's rules, with no I/O.

`EmulatorService.handle_chat(headers, body)` takes what a `POST /chat` carries and returns an
`Outcome`: what to send back, and how (see `_outcome`). The ASGI app and the in-process httpx2
transport both call it, so the API's rules live here only.

Flavors. A request with an `Authorization: Bearer <token>` header speaks the current flavor;
otherwise one with an `api_key` in its body speaks the legacy flavor; otherwise it is an
unauthenticated current-flavor request.

Checks, in order (the first that fails answers, and nothing is recorded):

1. the body is a JSON object and every field has its type (400, both flavors);
2. current: `scenario_id`, then `text`, present and non-empty (400); the token known (400);
   the scenario known and the token bound to it (404).
   legacy: `api_key`, `scenario_id` and `text` present and non-empty (400); the api_key
   belongs to the scenario (401);
3. `client_metadata` has at most 5 keys, then `message_context` at most 1000 characters (400);
4. a `conv_id` names a conversation of this scenario (400). A null or empty conv_id starts a
   new conversation.

ord_number. A conversation's messages are numbered from 1: the greeting is 1, and each turn
adds the user's message and then the reply. The k-th reply of a conversation is therefore
`2k + 1` (3, 5, 7, ...). A client that last saw ord_number `n` and now gets `m` knows that
`(m - n) // 2 - 1` of its earlier messages, whose outcome it did not learn, did land.

kb_topic. The topic filter applies only while every request of the conversation, the first
included, carried a `kb_topic` key in its `client_metadata`, as the API documents; its value
may change from one request to the next. A null kb_topic keeps the key present without
filtering.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import attrs

from ._errors import ErrorText
from ._faults import Fault, FaultInjector, FaultLike
from ._kb import GREETING, KnowledgeBase, bundled_kb
from ._outcome import Outcome, fault_outcome, json_outcome, text_outcome


__all__ = [
    "MAX_MESSAGE_CONTEXT_CHARS",
    "MAX_METADATA_KEYS",
    "MAX_REQUEST_BYTES",
    "EmulatorService",
    "Flavor",
    "RecordedConversation",
    "RecordedMessage",
    "Role",
    "Scenario",
    "Stats",
]

#: The documented limit of `client_metadata` keys.
MAX_METADATA_KEYS = 5
#: The documented limit of `message_context`, spaces included.
MAX_MESSAGE_CONTEXT_CHARS = 1000
#: The largest `/chat` request body the emulator reads by default: a message, 1000 characters
#: of context and five metadata keys fit many times over. A larger one gets a 413.
MAX_REQUEST_BYTES = 1024 * 1024


class Flavor(str, enum.Enum):
    """Which of the two documented APIs a request speaks."""

    #: `Authorization: Bearer <token>`.
    CURRENT = "current"
    #: `api_key` in the JSON body.
    LEGACY = "legacy"


class Role(str, enum.Enum):
    """Who a recorded message is from."""

    GREETING = "greeting"
    USER = "user"
    ASSISTANT = "assistant"


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class Scenario:
    """An AI Agent the emulator serves, with the credentials bound to it.

    Attributes:
        scenario_id: the ID clients send as `scenario_id`.
        tokens: Bearer tokens (current flavor) bound to this scenario.
        api_keys: api_keys (legacy flavor) that belong to this scenario.
        greeting: the first message of each conversation (ord_number 1).
    """

    scenario_id: str
    tokens: tuple[str, ...] = attrs.field(default=(), converter=_strings, repr=False)
    api_keys: tuple[str, ...] = attrs.field(default=(), converter=_strings, repr=False)
    greeting: str = attrs.field(default=GREETING, kw_only=True)

    def __repr__(self) -> str:
        return (
            f"<Scenario {self.scenario_id!r} tokens={len(self.tokens)} "
            f"api_keys={len(self.api_keys)}>"
        )


#: The scenario an `EmulatorService()` serves when given none.
DEMO_SCENARIO = Scenario("demo", tokens=("demo-token",), api_keys=("demo-key",))


@attrs.frozen
class RecordedMessage:
    """One message of a conversation, as the Inbox's conversation export shows it.

    Attributes:
        conv_id: the conversation.
        ord_number: its number in the conversation (greeting 1, then user, reply, ...).
        role: greeting, user or assistant.
        text: what was said (replies are HTML-ish).
        scenario_id: the scenario of the conversation.
        flavor: the flavor of the request that created it.
        time: when it was recorded, in UTC.
        message_context: the request's message_context, if any.
        client_metadata: the request's client_metadata (a copy), if any.
    """

    conv_id: str
    ord_number: int
    role: Role
    text: str
    scenario_id: str
    flavor: Flavor
    time: dt.datetime
    message_context: str | None = None
    client_metadata: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by `/_emulator/conversations`."""
        return {
            "conv_id": self.conv_id,
            "ord_number": self.ord_number,
            "role": self.role.value,
            "text": self.text,
            "scenario_id": self.scenario_id,
            "flavor": self.flavor.value,
            "time": self.time.isoformat(),
            "message_context": self.message_context,
            "client_metadata": None if self.client_metadata is None else dict(self.client_metadata),
        }


@attrs.frozen
class RecordedConversation:
    """A conversation and its messages, in order.

    Attributes:
        conv_id: its ID.
        scenario_id: the scenario it belongs to.
        messages: every message, greeting first.
    """

    conv_id: str
    scenario_id: str
    messages: tuple[RecordedMessage, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by `/_emulator/conversations/{conv_id}`."""
        return {
            "conv_id": self.conv_id,
            "scenario_id": self.scenario_id,
            "messages": [m.to_dict() for m in self.messages],
        }


@attrs.frozen
class Stats:
    """Counters of `/chat` requests since the service started or was reset.

    Attributes:
        requests: every request handled.
        replied: answered normally (200, no fault).
        rejected: answered with a 4xx by the API's rules.
        faulted: shaped by a fault.
        by_status: requests per status sent (0 for a dropped connection).
        by_fault: requests per fault kind.
        conversations: conversations recorded.
        turns: turns recorded (faults after the turn included).
    """

    requests: int = 0
    replied: int = 0
    rejected: int = 0
    faulted: int = 0
    by_status: Mapping[int, int] = attrs.field(factory=dict[int, int])
    by_fault: Mapping[str, int] = attrs.field(factory=dict[str, int])
    conversations: int = 0
    turns: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by `/_emulator/stats`."""
        return {
            "requests": self.requests,
            "replied": self.replied,
            "rejected": self.rejected,
            "faulted": self.faulted,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_fault": dict(sorted(self.by_fault.items())),
            "conversations": self.conversations,
            "turns": self.turns,
        }


class _Rejected(Exception):  # noqa: N818 -- a control-flow signal, not an error
    """The request breaks a rule; carries the response."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.outcome = text_outcome(status, text)


def _reject(status: int, text: str) -> NoReturn:
    raise _Rejected(status, text)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(name)


def _wrong_type(name: str, expected: str) -> NoReturn:
    _reject(400, ErrorText.WRONG_TYPE.format(name=name, expected=expected))


@attrs.frozen
class _Request:
    """A well-typed request body, with its flavor and credential."""

    flavor: Flavor
    credential: str | None
    scenario_id: str | None
    text: str | None
    conv_id: str | None
    client_metadata: dict[str, Any] | None
    message_context: str | None

    @property
    def has_kb_topic(self) -> bool:
        return self.client_metadata is not None and "kb_topic" in self.client_metadata

    @property
    def kb_topic(self) -> str | None:
        topic = (self.client_metadata or {}).get("kb_topic")
        return topic if isinstance(topic, str) else None


def _bearer(headers: Mapping[str, str]) -> str | None:
    """The Bearer token of an `Authorization` header, if there is one ('' if it is empty)."""
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _parse(headers: Mapping[str, str], body: bytes) -> _Request:
    """Read the body and decide the flavor; reject malformed requests."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        _reject(400, ErrorText.INVALID_JSON)
    if not isinstance(data, dict):
        _reject(400, ErrorText.BODY_NOT_AN_OBJECT)
    fields: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    token = _bearer(headers)
    flavor = Flavor.CURRENT if token is not None or "api_key" not in fields else Flavor.LEGACY

    def string(name: str) -> str | None:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            _wrong_type(name, "a string")
        return value

    metadata = fields.get("client_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        _wrong_type("client_metadata", "an object")
    topic = (metadata or {}).get("kb_topic")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if topic is not None and not isinstance(topic, str):
        _wrong_type("client_metadata.kb_topic", "a string")
    api_key = string("api_key")
    return _Request(
        flavor=flavor,
        credential=token if flavor is Flavor.CURRENT else api_key,
        scenario_id=string("scenario_id"),
        text=string("text"),
        conv_id=string("conv_id") or None,
        client_metadata=metadata,  # pyright: ignore[reportUnknownArgumentType]
        message_context=string("message_context"),
    )


@attrs.define
class _Conversation:
    conv_id: str
    scenario_id: str
    messages: list[RecordedMessage] = attrs.Factory(list[RecordedMessage])
    #: Whether every request so far carried the kb_topic key (the filter's condition).
    kb_topic_throughout: bool = True


def _scenarios(value: Iterable[Scenario]) -> tuple[Scenario, ...]:
    scenarios = tuple(value)
    ids = [s.scenario_id for s in scenarios]
    if len(set(ids)) != len(ids):
        raise ValueError("Two scenarios have the same scenario_id.")
    return scenarios


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0.")


@attrs.define(kw_only=True, repr=False)
class EmulatorService:
    """A Quickchat-compatible Chat endpoint, in memory: rules, record and faults.

    Thread-safe: it is served from a server thread while tests inspect it from another.

    Args:
        scenarios: the AI Agents served, with their credentials (default: `demo`, token
            `demo-token`, api_key `demo-key`).
        knowledge_base: what replies draw on (default: the bundled shop articles).
        latency: seconds added before every `/chat` response.
        fault_rates: probability per fault for each request (see `FaultInjector`).
        seed: makes conv_ids and fault draws reproducible.
        conv_id_factory: makes conv_ids (overrides `seed` for them); must not repeat.
        legacy_continuation_conv_id: answer legacy continuations with their conv_id too. By
            default they omit it, as the legacy document's example does.
        clock: the time of recorded messages (default: now, UTC).
        max_request_bytes: the largest `/chat` request body read; a larger one gets a 413
            (the served app stops reading it there).

    Attributes:
        faults: script faults (`service.faults.script([...])`) or change their rates.
    """

    scenarios: tuple[Scenario, ...] = attrs.field(default=(DEMO_SCENARIO,), converter=_scenarios)
    knowledge_base: KnowledgeBase = attrs.field(factory=bundled_kb)
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    fault_rates: Mapping[FaultLike, float] = attrs.field(factory=dict[FaultLike, float])
    seed: int | None = None
    conv_id_factory: Callable[[], str] | None = None
    legacy_continuation_conv_id: bool = False
    clock: Callable[[], dt.datetime] = _utc_now
    max_request_bytes: int = MAX_REQUEST_BYTES
    faults: FaultInjector = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _conversations: dict[str, _Conversation] = attrs.field(
        factory=dict[str, _Conversation], init=False
    )
    _counts: Counter[str] = attrs.field(factory=Counter[str], init=False)
    _by_status: Counter[int] = attrs.field(factory=Counter[int], init=False)
    _by_fault: Counter[str] = attrs.field(factory=Counter[str], init=False)
    _new_conv_id: Callable[[], str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.faults = FaultInjector(self.fault_rates, seed=self.seed)
        if self.conv_id_factory is not None:
            self._new_conv_id = self.conv_id_factory
        elif self.seed is not None:
            rng = random.Random(f"conv_id:{self.seed}")  # noqa: S311 -- reproducible, not secret
            self._new_conv_id = lambda: f"{rng.getrandbits(64):016x}"
        else:
            self._new_conv_id = lambda: secrets.token_hex(8)

    def __repr__(self) -> str:
        with self._lock:
            count = len(self._conversations)
        ids = ", ".join(repr(s.scenario_id) for s in self.scenarios)
        return f"<EmulatorService scenarios=[{ids}] conversations={count}>"

    # --- the endpoint --------------------------------------------------------------------

    def handle_chat(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Handle one `POST /chat`: check it, record the turn, reply, and apply any fault.

        Args:
            headers: the request headers (names in any case).
            body: the raw request body.

        Returns:
            What to send back, and how. It never raises for anything a client can send.
        """
        with self._lock:
            fault = self.faults.next_fault()
            if fault is not None and not fault.kind.records_turn:
                outcome = attrs.evolve(fault_outcome(fault, None), fault=fault.kind)
            else:
                try:
                    outcome = self._turn(_parse(headers, body), fault)
                except _Rejected as rejected:
                    outcome = rejected.outcome
            self._count(outcome)
        delay = self.latency
        if fault is not None and outcome.fault is not None:  # the fault applied
            delay += fault.delay
        return attrs.evolve(outcome, delay=delay) if delay else outcome

    def refuse_too_large(self, size: int) -> Outcome:
        """Answer a `POST /chat` whose body is larger than `max_request_bytes`: 413, counted.

        Args:
            size: the body's size, or as much of it as was read before it passed the limit.
        """
        outcome = text_outcome(
            413,
            f"Request body too large ({size} bytes or more; at most "
            f"{self.max_request_bytes} are accepted).",
        )
        with self._lock:
            self._count(outcome)
        return outcome

    def _turn(self, request: _Request, fault: Fault | None) -> Outcome:
        scenario = self._authorize(request)
        self._check_limits(request)
        conversation = self._conversation(request, scenario)
        reply = self._record_turn(request, conversation)
        if fault is not None:
            return attrs.evolve(
                fault_outcome(fault, reply),
                fault=fault.kind,
                conv_id=conversation.conv_id,
                ord_number=reply["ord_number"],
            )
        return attrs.evolve(
            json_outcome(200, reply), conv_id=conversation.conv_id, ord_number=reply["ord_number"]
        )

    def _authorize(self, request: _Request) -> Scenario:
        """Check the required parameters and the credential; the scenario it unlocks."""
        credential = request.credential
        scenario = next((s for s in self.scenarios if s.scenario_id == request.scenario_id), None)
        if request.flavor is Flavor.LEGACY:
            if not (credential and request.scenario_id and request.text):
                _reject(400, ErrorText.LEGACY_MISSING_PARAMETERS)
            if scenario is None or credential not in scenario.api_keys:
                _reject(401, ErrorText.UNAUTHORIZED)
            return scenario
        if not request.scenario_id:
            _reject(400, ErrorText.MISSING_SCENARIO_ID)
        if not request.text:
            _reject(400, ErrorText.MISSING_TEXT)
        if not credential or not any(credential in s.tokens for s in self.scenarios):
            _reject(400, ErrorText.NOT_AUTHENTICATED)
        if scenario is None or credential not in scenario.tokens:
            _reject(404, ErrorText.NO_SCENARIO.format(scenario_id=request.scenario_id))
        return scenario

    @staticmethod
    def _check_limits(request: _Request) -> None:
        if request.client_metadata is not None and len(request.client_metadata) > MAX_METADATA_KEYS:
            _reject(400, ErrorText.TOO_MANY_METADATA_KEYS)
        context = request.message_context
        if context is not None and len(context) > MAX_MESSAGE_CONTEXT_CHARS:
            legacy = request.flavor is Flavor.LEGACY
            _reject(
                400,
                ErrorText.LEGACY_MESSAGE_CONTEXT_TOO_LONG
                if legacy
                else ErrorText.MESSAGE_CONTEXT_TOO_LONG,
            )

    def _conversation(self, request: _Request, scenario: Scenario) -> _Conversation:
        """The conversation the request continues, or a new one with its greeting."""
        if request.conv_id is not None:
            conversation = self._conversations.get(request.conv_id)
            if conversation is None or conversation.scenario_id != scenario.scenario_id:
                template = (
                    ErrorText.LEGACY_CONV_ID_NOT_FOUND
                    if request.flavor is Flavor.LEGACY
                    else ErrorText.CONV_ID_NOT_VALID
                )
                _reject(400, template.format(conv_id=request.conv_id))
            return conversation
        conv_id = self._new_conv_id()
        if conv_id in self._conversations:
            raise RuntimeError(f"The conv_id factory repeated {conv_id!r}.")
        conversation = _Conversation(conv_id=conv_id, scenario_id=scenario.scenario_id)
        self._conversations[conv_id] = conversation
        self._append(conversation, request, Role.GREETING, scenario.greeting)
        return conversation

    def _record_turn(self, request: _Request, conversation: _Conversation) -> dict[str, Any]:
        """Record the user's message and the reply; the 200 JSON for the request's flavor."""
        continuing = request.conv_id is not None
        conversation.kb_topic_throughout &= request.has_kb_topic
        kb_topic = request.kb_topic if conversation.kb_topic_throughout else None
        text = request.text or ""
        reply = self.knowledge_base.reply(
            text, kb_topic=kb_topic, message_context=request.message_context
        )
        self._append(conversation, request, Role.USER, text)
        ord_number = self._append(conversation, request, Role.ASSISTANT, reply)
        if request.flavor is Flavor.CURRENT:
            return {
                "conv_id": conversation.conv_id,
                "reply": reply,
                "ord_number": ord_number,
                "src": 0,
            }
        if continuing and not self.legacy_continuation_conv_id:
            return {"ord_number": ord_number, "reply": reply}
        return {"ord_number": ord_number, "conv_id": conversation.conv_id, "reply": reply}

    def _append(self, conversation: _Conversation, request: _Request, role: Role, text: str) -> int:
        ord_number = len(conversation.messages) + 1
        metadata = request.client_metadata
        conversation.messages.append(
            RecordedMessage(
                conv_id=conversation.conv_id,
                ord_number=ord_number,
                role=role,
                text=text,
                scenario_id=conversation.scenario_id,
                flavor=request.flavor,
                time=self.clock(),
                message_context=request.message_context,
                client_metadata=None if metadata is None else json.loads(json.dumps(metadata)),
            )
        )
        return ord_number

    def _count(self, outcome: Outcome) -> None:
        self._counts["requests"] += 1
        self._by_status[outcome.status] += 1
        if outcome.fault is not None:
            self._counts["faulted"] += 1
            self._by_fault[outcome.fault.value] += 1
        elif outcome.status == 200:  # noqa: PLR2004
            self._counts["replied"] += 1
        else:
            self._counts["rejected"] += 1
        if outcome.recorded:
            self._counts["turns"] += 1

    # --- inspection ----------------------------------------------------------------------

    def conversations(self) -> tuple[RecordedConversation, ...]:
        """Every conversation, oldest first, with its messages."""
        with self._lock:
            return tuple(self._export(c) for c in self._conversations.values())

    def conversation(self, conv_id: str) -> RecordedConversation:
        """One conversation.

        Raises:
            KeyError: no conversation has this conv_id.
        """
        with self._lock:
            return self._export(self._conversations[conv_id])

    def messages(self, conv_id: str) -> tuple[RecordedMessage, ...]:
        """The messages of a conversation, greeting first.

        Raises:
            KeyError: no conversation has this conv_id.
        """
        return self.conversation(conv_id).messages

    def user_messages(self, conv_id: str) -> tuple[str, ...]:
        """The texts the user sent in a conversation, in order: what a duplicate check needs.

        Raises:
            KeyError: no conversation has this conv_id.
        """
        return tuple(m.text for m in self.messages(conv_id) if m.role is Role.USER)

    def stats(self) -> Stats:
        """The request counters."""
        with self._lock:
            return Stats(
                requests=self._counts["requests"],
                replied=self._counts["replied"],
                rejected=self._counts["rejected"],
                faulted=self._counts["faulted"],
                by_status=dict(self._by_status),
                by_fault=dict(self._by_fault),
                conversations=len(self._conversations),
                turns=self._counts["turns"],
            )

    def reset(self) -> None:
        """Forget every conversation, zero the counters and drop the fault script.

        The configuration stays: scenarios, Knowledge Base, latency and fault rates.
        """
        with self._lock:
            self._conversations.clear()
            self._counts.clear()
            self._by_status.clear()
            self._by_fault.clear()
        self.faults.clear_script()

    @staticmethod
    def _export(conversation: _Conversation) -> RecordedConversation:
        return RecordedConversation(
            conv_id=conversation.conv_id,
            scenario_id=conversation.scenario_id,
            messages=tuple(conversation.messages),
        )
