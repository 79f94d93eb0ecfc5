"""Shared fixtures: every async test runs on asyncio and on trio, with mocked HTTP at the seam."""

from __future__ import annotations

import json
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
import stamina

from quickchat_async import AsyncQuickchat


TOKEN = "tok-CANARY-current-7f3a9c"
API_KEY = "key-CANARY-legacy-51d0e2"
SCENARIO_ID = "scn-42"
CURRENT_URL = "https://app.quickchat.ai"
LEGACY_URL = "https://chat.quickchat.ai"


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `@pytest.mark.anyio` test once per backend."""
    return str(request.param)


@pytest.fixture(params=["httpx", "aiohttp"])
def transport_name(request: pytest.FixtureRequest) -> str:
    """Run a test once per transport; aiohttp only on asyncio (see the hook below)."""
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


def chat_reply(
    reply: str = "Hi there!", conv_id: str | None = "conv-1", ord_number: int = 3, **extra: Any
) -> httpx.Response:
    """A 200 as the Chat endpoint sends it."""
    body: dict[str, Any] = {"reply": reply, "ord_number": ord_number, "src": 0, **extra}
    if conv_id is not None:
        body["conv_id"] = conv_id
    return httpx.Response(200, json=body)


def library_frames_with_locals(exc: BaseException) -> str:
    """Format every frame of `exc` and its chain with locals, except the tests' own frames.

    The tests' frames hold the credentials they passed in; everything else (the SDK, httpx,
    httpcore, anyio, stamina) must not.
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


def sent_json(request: httpx.Request) -> dict[str, Any]:
    """The JSON body the SDK sent."""
    return json.loads(request.content)  # type: ignore[no-any-return]


@pytest.fixture(name="router")
def _router() -> respx.Router:
    """A respx router for the current flavor's host; routes are added per test."""
    return respx.Router(base_url=CURRENT_URL, assert_all_called=False)


@pytest.fixture(name="legacy_router")
def _legacy_router() -> respx.Router:
    """A respx router for the legacy flavor's host."""
    return respx.Router(base_url=LEGACY_URL, assert_all_called=False)


@pytest.fixture(name="make_client")
async def _make_client() -> AsyncIterator[Callable[..., AsyncQuickchat]]:
    """Build clients whose HTTP goes to a respx router; closes them afterwards."""
    made: list[tuple[AsyncQuickchat, httpx.AsyncClient]] = []

    def make(router: respx.Router, **kwargs: Any) -> AsyncQuickchat:
        http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        if "api_key" not in kwargs:
            kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("scenario_id", SCENARIO_ID)
        client = AsyncQuickchat(http_client=http, **kwargs)
        made.append((client, http))
        return client

    yield make
    for client, http in made:
        await client.aclose()
        await http.aclose()


@pytest.fixture(name="client")
def _client(router: respx.Router, make_client: Callable[..., AsyncQuickchat]) -> AsyncQuickchat:
    """A current-flavor client on the `router` mock."""
    return make_client(router)


@pytest.fixture(name="legacy")
def _legacy(
    legacy_router: respx.Router, make_client: Callable[..., AsyncQuickchat]
) -> AsyncQuickchat:
    """A legacy-flavor client on the `legacy_router` mock."""
    return make_client(legacy_router, api_key=API_KEY)
