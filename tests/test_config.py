"""A client's configuration: the limits of an attempt, and everything a request is built from."""

from __future__ import annotations

import json
import math

import attrs
import pytest

from quickchat_async import NOT_GIVEN, Flavor, Timeout, ValidationError, __version__
from quickchat_async._config import (
    CURRENT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    LEGACY_BASE_URL,
    SDK_USER_AGENT,
    ClientConfig,
)
from quickchat_async._types import Secret

from .conftest import API_KEY, SCENARIO_ID, TOKEN, library_frames_with_locals


def build(**options: object) -> ClientConfig:
    """`ClientConfig.build` with a client's defaults; `token=` and `api_key=` are plain."""
    arguments: dict[str, object] = {
        "scenario_id": SCENARIO_ID,
        "base_url": None,
        "timeout": NOT_GIVEN,
        "max_retries": 2,
        "retry_ambiguous": False,
        "deadline": None,
        "default_headers": None,
        "max_connections": 100,
        "max_response_bytes": DEFAULT_MAX_RESPONSE_BYTES,
    }
    arguments.update(options)
    token, api_key = arguments.pop("token", None), arguments.pop("api_key", None)
    return ClientConfig.build(token=Secret(token), api_key=Secret(api_key), **arguments)  # type: ignore[arg-type]


class TestTimeout:
    def test_default(self):
        """By default an attempt has 30 s in all and 5 s of it to connect."""
        assert Timeout() == DEFAULT_TIMEOUT == Timeout(total=30.0, connect=5.0)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, Timeout(total=None, connect=None)),
            (10, Timeout(total=10.0, connect=5.0)),
            (2.5, Timeout(total=2.5, connect=2.5)),
            (Timeout(total=60, connect=1), Timeout(total=60, connect=1)),
        ],
    )
    def test_of(self, value, expected):
        """None means no limit at all; seconds bound the attempt, and connecting to 5 s of it."""
        assert Timeout.of(value) == expected

    @pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "30", True])
    def test_bad_values(self, value):
        """A limit that is not a positive number of seconds is refused."""
        with pytest.raises(ValidationError, match="timeout"):
            Timeout.of(value)
        with pytest.raises(ValidationError, match=r"Timeout\.total"):
            Timeout(total=value)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=r"Timeout\.connect"):
            Timeout(connect=value)  # type: ignore[arg-type]

    def test_frozen_and_hashable(self):
        """A Timeout is a value: it cannot change, and equal ones hash alike."""
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            DEFAULT_TIMEOUT.total = 1  # type: ignore[misc]
        assert len({Timeout(total=3), Timeout(total=3.0)}) == 1


class TestFlavor:
    def test_token_selects_the_current_flavor(self):
        """A token means Bearer auth against app.quickchat.ai; the body starts with scenario_id."""
        config = build(token=TOKEN)

        assert config.flavor is Flavor.CURRENT
        assert config.base_url == CURRENT_BASE_URL
        assert config.url == "https://app.quickchat.ai/chat"
        assert config.headers["Authorization"] == f"Bearer {TOKEN}"
        assert config.body_prefix == b'{"scenario_id":"scn-42",'

    def test_api_key_selects_the_legacy_flavor(self):
        """An api_key goes first in the body, against chat.quickchat.ai; no Authorization."""
        config = build(api_key=API_KEY)

        assert config.flavor is Flavor.LEGACY
        assert config.base_url == LEGACY_BASE_URL
        assert "Authorization" not in config.headers
        assert config.body_prefix == f'{{"api_key":"{API_KEY}","scenario_id":"scn-42",'.encode()

    def test_body_prefix_is_json(self):
        """Quotes and backslashes in the credential, and non-ASCII in the scenario, are escaped."""
        config = build(api_key='k"\\', scenario_id='s"\\é')

        assert json.loads(config.body_prefix + b'"text":"hi"}') == {
            "api_key": 'k"\\',
            "scenario_id": 's"\\é',
            "text": "hi",
        }

    def test_secrets_to_mask(self):
        """The credential is kept to be masked wherever server text is quoted."""
        assert build(token=TOKEN).secrets == (TOKEN,)
        assert build(api_key=API_KEY).secrets == (API_KEY,)


class TestEnvironment:
    def test_fallback(self, monkeypatch):
        """Unset arguments come from the QUICKCHAT_* variables."""
        monkeypatch.setenv("QUICKCHAT_API_KEY", API_KEY)
        monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "from-env")
        monkeypatch.setenv("QUICKCHAT_BASE_URL", "http://127.0.0.1:8765")

        config = build(scenario_id=None)

        assert config.flavor is Flavor.LEGACY
        assert config.scenario_id == "from-env"
        assert config.base_url == "http://127.0.0.1:8765"

    def test_explicit_credential_beats_the_environment(self, monkeypatch):
        """An explicit api_key is not 'both' just because QUICKCHAT_API_TOKEN is set."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)

        assert build(api_key=API_KEY).flavor is Flavor.LEGACY

    def test_explicit_arguments_beat_the_environment(self, monkeypatch):
        """scenario_id and base_url given as arguments win over their variables."""
        monkeypatch.setenv("QUICKCHAT_SCENARIO_ID", "from-env")
        monkeypatch.setenv("QUICKCHAT_BASE_URL", "http://127.0.0.1:8765")

        config = build(token=TOKEN, base_url="https://proxy.example")

        assert (config.scenario_id, config.base_url) == (SCENARIO_ID, "https://proxy.example")

    def test_both_in_the_environment(self, monkeypatch):
        """Both variables set is refused too, and the message names them."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", TOKEN)
        monkeypatch.setenv("QUICKCHAT_API_KEY", API_KEY)

        with pytest.raises(ValidationError, match="both set") as info:
            build()

        assert TOKEN not in library_frames_with_locals(info.value)
        assert API_KEY not in library_frames_with_locals(info.value)

    def test_empty_variables_are_unset(self, monkeypatch):
        """An empty variable counts as unset."""
        monkeypatch.setenv("QUICKCHAT_API_TOKEN", "")
        monkeypatch.setenv("QUICKCHAT_API_KEY", API_KEY)

        assert build().flavor is Flavor.LEGACY

    def test_base_url_checked_from_the_environment_too(self, monkeypatch):
        """QUICKCHAT_BASE_URL goes through the same rules as base_url."""
        monkeypatch.setenv("QUICKCHAT_BASE_URL", "http://example.com")

        with pytest.raises(ValidationError, match="clear text"):
            build(token=TOKEN)


class TestHeaders:
    def test_every_request(self):
        """JSON in, JSON or text out, and a User-Agent naming the SDK."""
        headers = build(token=TOKEN).headers

        assert headers["Content-Type"] == "application/json"
        assert headers["Accept"] == "application/json, text/plain"
        assert headers["User-Agent"] == SDK_USER_AGENT == f"quickchat-async/{__version__}"

    def test_default_headers_added(self):
        """default_headers go out with every request, beside the SDK's own."""
        headers = build(token=TOKEN, default_headers={"X-Trace": "abc"}).headers

        assert headers["X-Trace"] == "abc"
        assert headers["Authorization"] == f"Bearer {TOKEN}"

    @pytest.mark.parametrize("name", ["User-Agent", "user-agent", "USER-AGENT"])
    def test_the_callers_user_agent_wins(self, name):
        """A User-Agent in default_headers, in any spelling, is the only one sent."""
        config = build(token=TOKEN, default_headers={name: "my-bot/1.0"})

        agents = [v for k, v in config.headers.items() if k.lower() == "user-agent"]
        assert agents == ["my-bot/1.0"]
        assert config.with_user_agent("quickchat-async/9 httpx2/9") is config

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("accept", "application/json"),
            ("CONTENT-TYPE", "application/json; charset=utf-8"),
            ("accept-encoding", "identity"),
        ],
    )
    def test_any_header_in_any_spelling_replaces_the_sdks(self, name, value):
        """A header in default_headers or extra_headers replaces the SDK's, in any spelling.

        One copy goes out, not two.
        """
        config = build(token=TOKEN, default_headers={name: value})
        per_call = build(token=TOKEN).call({"extra_headers": {name: value}})

        for headers in (config.headers, per_call.headers):
            assert [v for k, v in headers.items() if k.lower() == name.lower()] == [value]

    def test_user_agent_names_the_engine(self):
        """A transport's User-Agent replaces the SDK's default one."""
        config = build(token=TOKEN).with_user_agent("quickchat-async/9 httpx2/9")

        assert config.headers["User-Agent"] == "quickchat-async/9 httpx2/9"
        assert config.headers["Authorization"] == f"Bearer {TOKEN}"


class TestSettings:
    def test_defaults(self):
        """A client's defaults: 30 s attempts, two retries of what is safe, 100 connections."""
        config = build(token=TOKEN)

        assert config.timeout == DEFAULT_TIMEOUT
        assert (config.max_retries, config.retry_ambiguous) == (2, False)
        assert (config.max_connections, config.max_response_bytes) == (100, 1024 * 1024)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("max_retries", -1),
            ("max_retries", 1.5),
            ("max_retries", True),
            ("max_connections", 0),
            ("max_response_bytes", 10),
            ("timeout", 0),
            ("timeout", "30"),
        ],
    )
    def test_bad_limits(self, name, value):
        """Retry, connection and size limits must be sensible; the error names the argument."""
        with pytest.raises(ValidationError, match=name):
            build(token=TOKEN, **{name: value})

    def test_with_options_keeps_the_endpoint_and_credential(self):
        """A copy with other per-request settings talks to the same place, the same way."""
        config = build(token=TOKEN)

        other = config.with_options(timeout=Timeout(total=1), max_retries=0, retry_ambiguous=True)

        assert (other.timeout, other.max_retries, other.retry_ambiguous) == (
            Timeout(total=1),
            0,
            True,
        )
        assert (other.url, other.headers, other.body_prefix) == (
            config.url,
            config.headers,
            config.body_prefix,
        )

    @pytest.mark.parametrize("credential", [{"token": TOKEN}, {"api_key": API_KEY}])
    def test_repr_hides_the_credential(self, credential):
        """The repr shows the settings, never the headers, body prefix or secrets."""
        text = repr(build(**credential))

        assert "scenario_id='scn-42'" in text
        assert TOKEN not in text
        assert API_KEY not in text
