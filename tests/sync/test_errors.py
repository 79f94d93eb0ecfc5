"""The blocking client's errors: every class of the tree, the retry policy, on every transport."""

from __future__ import annotations

import functools
import socket

import httpx2
import pytest

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ChatRequest,
    ConversationNotFoundError,
    PermissionDeniedError,
    Quickchat,
    ScenarioNotFoundError,
)
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator

from .cases import CASES, Case, check, play
from .conftest import SCENARIO, TOKEN, assert_no_secret


@pytest.fixture(
    params=[
        "httpx2 in process",
        pytest.param("httpx2 served", marks=pytest.mark.network),
        pytest.param("httpx served", marks=pytest.mark.network),
    ],
    name="where",
)
def _where(request: pytest.FixtureRequest) -> tuple[Emulator, str]:
    """An emulator and the transport to reach it with."""
    name: str = request.param
    emulator = request.getfixturevalue("served" if "served" in name else "emulator_in_process")
    return emulator, name.split(maxsplit=1)[0]


@pytest.fixture(name="emulator_in_process")
def _emulator_in_process() -> Emulator:
    from .conftest import new_emulator  # noqa: PLC0415

    return new_emulator()


class TestEveryFault:
    @pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
    def test_fault_becomes_its_error(self, where: tuple[Emulator, str], case: Case):
        """The fault raises its documented error (or is retried away), within its deadline."""
        emulator, transport = where
        emulator.faults.script([Fault.from_json(fault) for fault in case.script])
        make_client = functools.partial(emulator.sync_client, transport=transport)
        outcome = play(case, make_client)
        stats = emulator.stats()
        check(case, outcome, requests=stats.requests, recorded=stats.turns)
        for text in (outcome.message, outcome.formatted):
            assert_no_secret(text, f"the error of {case.name}")


class TestStatusErrors:
    def test_unknown_conv_id(self, emulator: Emulator):
        """A conv_id the server does not know: ConversationNotFoundError, a BadRequestError."""
        with emulator.sync_client() as client, pytest.raises(ConversationNotFoundError) as info:
            client.say("Hello", conv_id="no-such-conversation")
        assert isinstance(info.value, BadRequestError)
        assert info.value.status_code == 400

    @pytest.mark.parametrize(("flavor", "status"), [("current", 400), ("legacy", 401)])
    def test_refused_credential(self, emulator: Emulator, flavor, status):
        """A credential the server does not know: AuthenticationError (400 or 401 by flavor)."""
        credential = {"token": "tok-wrong"} if flavor == "current" else {"api_key": "key-wrong"}
        with (
            emulator.sync_http_client() as http,
            Quickchat(
                scenario_id=SCENARIO.scenario_id,
                base_url=emulator.base_url,
                http_client=http,
                **credential,
            ) as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.say("Hello")
        assert info.value.status_code == status
        assert "wrong" not in str(info.value)

    def test_unknown_scenario(self, emulator: Emulator):
        """A scenario the token does not unlock: ScenarioNotFoundError (404)."""
        with (
            emulator.sync_client(scenario_id="someone-elses") as client,
            pytest.raises(ScenarioNotFoundError),
        ):
            client.say("Hello")

    def test_request_the_server_rejects(self, emulator: Emulator):
        """A hand-made request with six metadata keys: the server's 400, as BadRequestError."""
        with emulator.sync_client() as client:
            config = client.config
            body = (
                config.body_prefix
                + b'"text":"Hi","client_metadata":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}}'
            )
            request = ChatRequest(config.url, config.headers, body, config.timeout)
            with pytest.raises(BadRequestError, match="at most 5"):
                client.send(request)

    @pytest.mark.parametrize(
        ("status", "error", "match"),
        [
            (403, PermissionDeniedError, "denied access"),
            (307, APIStatusError, "does not follow redirects"),
            (418, APIStatusError, "does not document"),
        ],
    )
    def test_statuses_the_emulator_never_sends(self, status, error, match):
        """403, a redirect and an undocumented status, from a mock of httpx2.Client."""
        seen: list[httpx2.Request] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return httpx2.Response(status, headers={"location": "https://elsewhere"}, text="no")

        with (
            httpx2.Client(transport=httpx2.MockTransport(handler)) as http,
            Quickchat(token=TOKEN, scenario_id="s", http_client=http) as client,
            pytest.raises(error, match=match) as info,
        ):
            client.say("Hello")
        assert type(info.value) is error
        assert info.value.status_code == status
        assert len(seen) == 1
        assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


class TestConnectionErrors:
    def test_refused_connection_is_retried_and_reported_unsent(
        self, caplog: pytest.LogCaptureFixture
    ):
        """Nothing listening: the request cannot have been sent, so it is retried, then raised."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with (
            Quickchat(token=TOKEN, scenario_id="s", base_url=f"http://127.0.0.1:{port}") as client,
            pytest.raises(APIConnectionError, match="could not connect") as info,
        ):
            client.say("Hello")
        assert info.value.outcome_unknown is False
        retried = [record for record in caplog.records if "Retrying" in record.getMessage()]
        assert len(retried) == 2

    def test_retries_are_logged(self, emulator: Emulator, caplog: pytest.LogCaptureFixture):
        """Each retry is logged with its attempt number and the failure it follows."""
        emulator.faults.script([Fault("rate_limit", retry_after="0")] * 2)
        with emulator.sync_client() as client:
            assert client.say("Hello").attempts == 3
        retries = [
            record.getMessage()
            for record in caplog.records
            if record.name == "quickchat_async" and "Retrying" in record.getMessage()
        ]
        assert retries == [
            f"Retrying the Chat request to {emulator.base_url}/chat (attempt {n} of 3) after "
            "RateLimitError"
            for n in (2, 3)
        ]
