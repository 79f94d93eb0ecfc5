"""Fixtures for the emulator's tests: a service with two scenarios, and a way to call it.

The first scenario is the test scenario of tests/conftest.py, with the test credentials.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from quickchat_async.emulator import EmulatorService, Outcome, Scenario
from tests.conftest import API_KEY, SCENARIO, SCENARIO_ID, TOKEN


OTHER_TOKEN = "tok-2"
OTHER_API_KEY = "key-2"
OTHER_SCENARIO_ID = "scn-2"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

Chat = Callable[..., Outcome]


def make_service(**options: Any) -> EmulatorService:
    """A service with two scenarios, numbered conv_ids and a fixed clock."""
    numbers = itertools.count(1)
    options.setdefault("conv_id_factory", lambda: f"conv-{next(numbers)}")
    return EmulatorService(
        scenarios=(
            SCENARIO,
            Scenario(OTHER_SCENARIO_ID, tokens=(OTHER_TOKEN,), api_keys=(OTHER_API_KEY,)),
        ),
        clock=lambda: NOW,
        **options,
    )


def current(text: str = "Hello!", **fields: Any) -> dict[str, Any]:
    """A current-flavor body for the test scenario."""
    return {"scenario_id": SCENARIO_ID, "text": text, **fields}


def legacy(text: str = "Hello!", **fields: Any) -> dict[str, Any]:
    """A legacy-flavor body for the test scenario."""
    return {"api_key": API_KEY, "scenario_id": SCENARIO_ID, "text": text, **fields}


@pytest.fixture(name="service")
def _service() -> EmulatorService:
    return make_service()


@pytest.fixture(name="chat")
def _chat(service: EmulatorService) -> Chat:
    """Call the core: `chat(body, token=TOKEN)`; a body that is not bytes is sent as JSON."""

    def chat(body: object, *, token: str | None = TOKEN) -> Outcome:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return service.handle_chat(headers, raw)

    return chat
