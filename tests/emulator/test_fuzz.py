"""Fuzzing the core: whatever a client sends, the answer is a well-formed 2xx or 4xx."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickchat_async.emulator import Action, EmulatorService, Outcome

from .conftest import API_KEY, SCENARIO_ID, TOKEN, make_service


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=12,
)
known_fields = st.fixed_dictionaries(
    {},
    optional={
        "scenario_id": st.sampled_from([SCENARIO_ID, "scn-2", "", "nope"]) | json_values,
        "text": st.text(max_size=40) | json_values,
        "conv_id": st.sampled_from(["conv-1", "conv-2", "", "x" * 50]) | json_values,
        "api_key": st.sampled_from([API_KEY, "key-2", "", "wrong"]) | json_values,
        "client_metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=7)
        | st.fixed_dictionaries({"kb_topic": st.sampled_from(["billing", "shipping"])})
        | json_values,
        "message_context": st.text(max_size=20)
        | st.just("The user's name is Zoë." + " " * 980)
        | json_values,
    },
)
headers = st.dictionaries(
    st.sampled_from(["Authorization", "authorization", "Content-Type", "X-Other"]) | st.text(),
    st.sampled_from([f"Bearer {TOKEN}", "Bearer tok-2", "Bearer", "Basic abc", ""]) | st.text(),
    max_size=3,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | known_fields.map(lambda v: json.dumps(v).encode())
    | known_fields.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
)


def assert_well_formed(outcome: Outcome) -> None:
    assert isinstance(outcome, Outcome)
    assert outcome.action is Action.RESPOND
    assert outcome.status in {200, 400, 401, 404}
    assert outcome.header("content-length") == str(len(outcome.body))
    if outcome.status == 200:
        assert outcome.header("content-type") == "application/json"
        data = outcome.json()
        assert isinstance(data["reply"], str)
        assert data["ord_number"] % 2 == 1
        assert outcome.recorded
    else:
        assert outcome.header("content-type") == "text/plain; charset=utf-8"
        assert outcome.text.strip()
        assert not outcome.recorded


@FUZZ
@given(headers=headers, body=bodies)
def test_any_request_gets_a_well_formed_answer(headers, body):
    """Random headers and bodies never crash the core, and get a 2xx or a 4xx with a text."""
    service = make_service()
    service.handle_chat(headers, json.dumps({"scenario_id": SCENARIO_ID, "text": "hi"}).encode())

    assert_well_formed(service.handle_chat(headers, body))


@FUZZ
@given(requests=st.lists(st.tuples(headers, bodies), max_size=8))
def test_the_record_stays_consistent(requests):
    """Whatever the sequence of requests, every conversation is numbered 1, 2, 3... in order."""
    service: EmulatorService = make_service()

    outcomes = [service.handle_chat(h, b) for h, b in requests]

    for outcome in outcomes:
        assert_well_formed(outcome)
    for conversation in service.conversations():
        numbers = [m.ord_number for m in conversation.messages]
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(numbers) % 2 == 1
        json.dumps(conversation.to_dict())  # the export is always valid JSON
    stats = service.stats()
    assert stats.requests == len(requests)
    assert stats.replied + stats.rejected == len(requests)
    json.dumps(stats.to_dict())
