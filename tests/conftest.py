"""The one set of test credentials, the fake Chat endpoint, and the emulator fixtures.

Every async test runs on asyncio and on trio through the anyio pytest plugin; tests of the
aiohttp transport run on asyncio only (aiohttp is an asyncio library).

HTTP is mocked at the seam, never by patching. Clients of the default engine get an
`httpx2.AsyncClient(transport=httpx2.MockTransport(handler))` as their `http_client`; the usual
handler is `FakeChat`, a small fake of the Chat endpoint that numbers conversations and messages
as Quickchat does, and that can be told to fail. respx is used only for the legacy httpx
transport (tests/transports/test_httpx.py): it routes httpx requests, and httpx2 is a library
of its own that it does not see. Tests that need real behaviour (sockets, faults, the API's
rules) talk to the project's emulator: `emulator` in process, `served` on a loopback socket.
Both serve the test scenario: `SCENARIO_ID`, with `TOKEN` (current flavor) and `API_KEY`
(legacy flavor), the credentials every test uses.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import anyio
import attrs
import httpx2
import pytest
import stamina

from quickchat_async import (
    AsyncQuickchat,
    BaseTransport,
    ChatRequest,
    HTTPResponse,
    Transport,
    __version__,
)
from quickchat_async.emulator import DEMO_SCENARIO, Fault, Scenario
from quickchat_async.testing import Emulator


#: The test credentials: distinctive, so that a leak anywhere (a log line, a repr, a traceback)
#: is found by a plain substring search.
TOKEN = "tok-CANARY-current-7f3a9c"
API_KEY = "key-CANARY-legacy-51d0e2"
SCENARIO_ID = "scn-42"
SECRETS = (TOKEN, API_KEY)
#: The AI Agent the emulator serves to the tests, with the test credentials.
SCENARIO = Scenario(SCENARIO_ID, tokens=(TOKEN,), api_keys=(API_KEY,))
#: What the docs' examples write (`AsyncQuickchat(token="...", scenario_id="...")`).
PLACEHOLDER = Scenario("...", tokens=("...",), api_keys=("...",))
CURRENT_URL = "https://app.quickchat.ai"
LEGACY_URL = "https://chat.quickchat.ai"


# --- backends and engines -------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `@pytest.mark.anyio` test once per backend."""
    return str(request.param)


@pytest.fixture(params=["httpx2", "httpx", "aiohttp"])
def transport_name(request: pytest.FixtureRequest) -> str:
    """Run a test once per HTTP engine; aiohttp only on asyncio (see the hook below)."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect aiohttp on trio: aiohttp is an asyncio library."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = (
            item.callspec.params
            if isinstance(item, pytest.Function) and hasattr(item, "callspec")
            else {}
        )
        if params.get("anyio_backend") == "trio" and params.get("transport_name") == "aiohttp":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _stamina_without_waits() -> Iterator[None]:
    """Retries keep their attempt counts but skip the backoff sleeps."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture(autouse=True)
def _no_quickchat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real credentials from the environment."""
    for name in (
        "QUICKCHAT_API_TOKEN",
        "QUICKCHAT_API_KEY",
        "QUICKCHAT_SCENARIO_ID",
        "QUICKCHAT_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


# --- a fake Chat endpoint, for httpx2.MockTransport --------------------------------------------


def chat_reply(
    reply: str = "Hi there!",
    *,
    conv_id: str | None = "conv-1",
    ord_number: int | None = 3,
    **extra: Any,
) -> httpx2.Response:
    """A 200 as the Chat endpoint sends it."""
    body: dict[str, Any] = {"reply": reply, "src": 0, **extra}
    if ord_number is not None:
        body["ord_number"] = ord_number
    if conv_id is not None:
        body["conv_id"] = conv_id
    return httpx2.Response(200, json=body)


def error_response(
    status: int, text: str = "", headers: Mapping[str, str] | None = None
) -> httpx2.Response:
    """An error as the Chat endpoint sends it: a status and a plain-text body."""
    return httpx2.Response(status, text=text, headers=headers)


def sent_json(request: httpx2.Request) -> dict[str, Any]:
    """The JSON body the SDK sent."""
    return json.loads(request.content)  # type: ignore[no-any-return]


@attrs.frozen
class Landed:
    """A failure `FakeChat` delivers after it recorded the message: the turn landed."""

    failure: httpx2.Response | Exception


#: What `FakeChat` does with one request: answer (None), answer this instead (a response),
#: raise (an exception) before recording the message, or record it, then fail (`Landed`).
Step = httpx2.Response | Exception | Landed | None


class FakeChat:
    """A fake Chat endpoint: conv_ids and ord_numbers as Quickchat gives them.

    A request without conv_id opens a conversation (`conv-1`, `conv-2`...) whose greeting is
    message 1, so its first reply is number 3; each turn adds two. A conv_id it does not know is
    a 400, as the API's. `script()` lines up what the next requests get instead.

    Args:
        omit_conv_id: leave conv_id out of continuation replies, as the legacy flavor does.
        delay: seconds every answer takes.
    """

    def __init__(self, *, omit_conv_id: bool = False, delay: float = 0.0) -> None:
        self.omit_conv_id = omit_conv_id
        self.delay = delay
        #: Every request received, in order.
        self.requests: list[httpx2.Request] = []
        #: The last ord_number of each conversation it knows; a test may add one.
        self.ords: dict[str, int] = {}
        self._ids = (f"conv-{n}" for n in itertools.count(1))
        self._script: list[Step] = []

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON body of every request, in order."""
        return [sent_json(request) for request in self.requests]

    def script(self, *steps: Step) -> None:
        """What the next requests get, one step each; after them, normal answers again."""
        self._script.extend(steps)

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        step = self._script.pop(0) if self._script else None
        if self.delay:
            await anyio.sleep(self.delay)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx2.Response):
            return step
        response = self._answer(sent_json(request))
        if isinstance(step, Landed):
            if isinstance(step.failure, Exception):
                raise step.failure
            return step.failure
        return response

    def _answer(self, body: dict[str, Any]) -> httpx2.Response:
        conv_id = body.get("conv_id")
        continuing = conv_id is not None
        if conv_id is None:
            conv_id = next(self._ids)
            self.ords[conv_id] = 1
        elif conv_id not in self.ords:
            return error_response(400, f"Conversation conv_id {conv_id} is not valid.")
        self.ords[conv_id] += 2
        return chat_reply(
            f"You said: {body['text']}",
            conv_id=None if continuing and self.omit_conv_id else conv_id,
            ord_number=self.ords[conv_id],
        )


@pytest.fixture(name="chat")
def _chat() -> FakeChat:
    """The fake Chat endpoint the `client` and `legacy` fixtures talk to."""
    return FakeChat()


MakeClient = Callable[..., AsyncQuickchat]


@pytest.fixture(name="make_client")
async def _make_client(chat: FakeChat) -> AsyncIterator[MakeClient]:
    """Build clients whose requests go to `handler` (default: `chat`) through httpx2's mock.

    `make_client(handler=None, **options)` takes `AsyncQuickchat`'s options; the test
    credentials are filled in (`api_key=API_KEY` picks the legacy flavor). All are closed after
    the test.
    """
    made: list[tuple[AsyncQuickchat, httpx2.AsyncClient]] = []

    def make(handler: Callable[..., Any] | None = None, **options: Any) -> AsyncQuickchat:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler or chat))
        if "api_key" not in options:
            options.setdefault("token", TOKEN)
        options.setdefault("scenario_id", SCENARIO_ID)
        client = AsyncQuickchat(http_client=http, **options)
        made.append((client, http))
        return client

    yield make
    for client, http in made:
        await client.aclose()
        await http.aclose()


@pytest.fixture(name="client")
def _client(make_client: MakeClient) -> AsyncQuickchat:
    """A current-flavor client talking to `chat`."""
    return make_client()


@pytest.fixture(name="legacy")
def _legacy(make_client: MakeClient) -> AsyncQuickchat:
    """A legacy-flavor client talking to `chat`."""
    return make_client(api_key=API_KEY)


# --- the transport seam, watched ----------------------------------------------------------------


class CountingTransport(BaseTransport):
    """Any transport, wrapped to count what crosses the SDK's transport seam.

    It tells, with no private state of the SDK or of the HTTP engine, how many requests the
    client has handed to its transport and not yet got back (`in_flight`), and the most it
    ever had at once (`peak`).

    Args:
        inner: the transport that sends.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.user_agent = getattr(inner, "user_agent", f"quickchat-async/{__version__}")
        #: Every request handed to the transport, in order.
        self.requests: list[ChatRequest] = []
        #: Sends that returned a response or raised.
        self.finished = 0
        self.peak = 0

    def __repr__(self) -> str:
        return f"<CountingTransport {self.inner!r} in_flight={self.in_flight}>"

    @property
    def in_flight(self) -> int:
        """Requests handed to the transport whose send has not returned or raised yet."""
        return len(self.requests) - self.finished

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """Send through the inner transport, counting."""
        self.requests.append(request)
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.inner.send(request)
        finally:
            self.finished += 1

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


# --- errors formatted as tools show them -------------------------------------------------------

#: One fault of each family: an error status, a dropped connection, a bad body, too big a body.
FAULT_FAMILIES = (
    Fault("html_502"),
    Fault("drop_after"),
    Fault("not_json"),
    Fault("huge_body", size=64 * 1024),
)


def with_locals(exc: BaseException) -> str:
    """`exc` and its chain with every frame's locals, as the standard library formats them."""
    return "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


def rich_rendering(exc: BaseException) -> str:
    """`exc` as rich prints it with `show_locals=True` (its pretty printer walks attrs fields)."""
    from rich.console import Console  # noqa: PLC0415 -- rich comes with the [cli] extra
    from rich.traceback import Traceback  # noqa: PLC0415

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    console.print(
        Traceback.from_exception(
            type(exc), exc, exc.__traceback__, show_locals=True, locals_max_string=10_000
        )
    )
    return out.getvalue()


def every_view(value: object) -> str:
    """What a user or a tool may print of a value: str, repr, rich's pretty form."""
    from rich.pretty import pretty_repr  # noqa: PLC0415 -- rich comes with the [cli] extra

    return "\n".join([str(value), repr(value), pretty_repr(value, max_string=None)])


def library_frames_with_locals(exc: BaseException) -> str:
    """Format every frame of `exc` and its chain with locals, except the tests' own frames.

    The tests' frames hold the credentials they passed in; everything else (the SDK, httpx2,
    httpcore2, anyio, stamina) must not.
    """
    lines: list[str] = []
    seen: set[int] = set()
    te: traceback.TracebackException | None = traceback.TracebackException.from_exception(
        exc, capture_locals=True
    )
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        lines.extend(
            f"{frame.filename}:{frame.lineno} {frame.name} {frame.locals}"
            for frame in te.stack
            if "/tests/" not in frame.filename
        )
        lines.extend(te.format_exception_only())
        te = te.__cause__ or te.__context__
    return "\n".join(lines)


# --- the emulator ------------------------------------------------------------------------------


@pytest.fixture(name="emulator")
def _emulator() -> Emulator:
    """A fresh emulator in process (no socket), serving the test scenario."""
    return Emulator(scenarios=[SCENARIO], seed=1)


def _in_a_thread(function: Callable[[], Any]) -> None:
    """Run an async function to its end on a thread of its own, where no event loop runs."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(function)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="served-emulator")
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


@pytest.fixture(name="served_emulator", scope="session")
def _served_emulator() -> Iterator[Emulator]:
    """One emulator for the session, served by uvicorn on 127.0.0.1.

    It serves the test scenario, the docs' placeholder and the demo scenario. Uvicorn runs in
    a thread with its own event loop, so one server serves tests on asyncio and on trio alike.
    """
    emulator = Emulator(scenarios=[SCENARIO, PLACEHOLDER, DEMO_SCENARIO], seed=5)
    _in_a_thread(emulator.start)
    yield emulator
    _in_a_thread(emulator.stop)


@pytest.fixture(name="served")
def _served(served_emulator: Emulator) -> Iterator[Emulator]:
    """The served emulator, with no conversation, no fault and no latency.

    A test may stop it and start it again on the same port; if it fails to, the next test gets
    it served on a new one.
    """
    emulator = served_emulator
    emulator.reset()
    emulator.faults.clear()
    emulator.service.latency = 0.0
    if not emulator.served:
        _in_a_thread(emulator.start)
    yield emulator
    emulator.faults.clear()
    emulator.service.latency = 0.0
