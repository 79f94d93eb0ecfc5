"""The wire core, with no transport at all: requests, replies, errors, and the retry policy."""

from __future__ import annotations

import json

import pytest

from quickchat_async import NOT_GIVEN
from quickchat_async._config import ClientConfig
from quickchat_async._types import Secret
from quickchat_async._validation import check_metadata
from quickchat_async._wire import encode_turn


def _nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


def config() -> ClientConfig:
    """A current-flavor client's configuration."""
    return ClientConfig.build(
        token=Secret("tok-CANARY-current-7f3a9c"),
        api_key=Secret(None),
        scenario_id="scn-42",
        base_url=None,
        timeout=NOT_GIVEN,
        max_retries=2,
        retry_ambiguous=False,
        default_headers=None,
        max_connections=100,
        max_response_bytes=1024 * 1024,
    )


class TestEncodeTurn:
    @pytest.mark.parametrize(
        "value",
        [2**64, -(2**63) - 1, 10**40, _nested("deep", 300)],
        ids=["2**64", "below -2**63", "10**40", "nested 300 deep"],
    )
    def test_any_json_metadata_is_sent(self, value):
        """Metadata the rules accept as JSON is sent, even where a fast encoder would give up.

        JSON numbers have no size limit, and nesting is bounded by the rules' own check.
        """
        check_metadata({"n": value})

        request = encode_turn(config(), text="hi", client_metadata={"n": value})

        assert json.loads(request.body)["client_metadata"] == {"n": value}
        assert request.body.startswith(b'{"scenario_id":"scn-42","text":"hi",')
