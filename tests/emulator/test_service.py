"""The service core: the Chat endpoint's rules in both flavors, and the record."""

from __future__ import annotations

import json
import threading

import pytest

from quickchat_async.emulator import (
    DEMO_SCENARIO,
    Action,
    EmulatorService,
    ErrorText,
    Flavor,
    Role,
    Scenario,
)

from .conftest import (
    API_KEY,
    NOW,
    OTHER_API_KEY,
    OTHER_SCENARIO_ID,
    OTHER_TOKEN,
    SCENARIO_ID,
    TOKEN,
    Chat,
    current,
    legacy,
    make_service,
)


def assert_error(outcome, status: int, text: str) -> None:
    assert (outcome.status, outcome.text) == (status, text)
    assert outcome.header("content-type") == "text/plain; charset=utf-8"
    assert outcome.action is Action.RESPOND
    assert not outcome.recorded


class TestCurrentFlavor:
    def test_first_message_starts_a_conversation(self, chat: Chat):
        """A request without conv_id gets the documented JSON with a new conv_id."""
        outcome = chat(current("Hello!"))

        assert outcome.status == 200
        assert outcome.header("content-type") == "application/json"
        assert outcome.header("content-length") == str(len(outcome.body))
        data = outcome.json()
        assert list(data) == ["conv_id", "reply", "ord_number", "src"]
        assert data["conv_id"] == "conv-1"
        assert data["ord_number"] == 3
        assert data["src"] == 0
        assert data["reply"].startswith("Hi there!")

    def test_continuation_keeps_the_conversation(self, chat: Chat):
        """Passing the conv_id back continues the conversation and returns its conv_id."""
        conv_id = chat(current()).json()["conv_id"]

        data = chat(current("Thanks", conv_id=conv_id)).json()

        assert data["conv_id"] == conv_id

    def test_ord_number_counts_greeting_user_and_reply(self, chat: Chat):
        """Replies are numbered 3, 5, 7...: greeting 1, then user message and reply per turn."""
        conv_id = chat(current()).json()["conv_id"]

        numbers = [chat(current(f"q{i}", conv_id=conv_id)).json()["ord_number"] for i in range(3)]

        assert numbers == [5, 7, 9]

    def test_ord_number_reveals_turns_that_landed(self, service: EmulatorService, chat: Chat):
        """A turn whose reply was lost still moves the next reply's ord_number by 2."""
        conv_id = chat(current()).json()["conv_id"]
        service.faults.script(["drop_after"])
        lost = chat(current("lost?", conv_id=conv_id))

        data = chat(current("next", conv_id=conv_id)).json()

        assert lost.action is Action.DROP
        assert (data["ord_number"] - 3) // 2 - 1 == 1  # one earlier message landed
        assert service.user_messages(conv_id) == ("Hello!", "lost?", "next")

    def test_conversations_are_independent(self, chat: Chat):
        """Each new conversation gets its own conv_id and starts at ord_number 3."""
        first, second = chat(current()).json(), chat(current()).json()

        assert first["conv_id"] != second["conv_id"]
        assert first["ord_number"] == second["ord_number"] == 3

    def test_missing_scenario_id(self, chat: Chat):
        """No scenario_id is a 400 with the documented text."""
        assert_error(chat({"text": "Hi"}), 400, "Missing required parameter: scenario_id")

    @pytest.mark.parametrize("scenario_id", [None, ""])
    def test_null_or_empty_scenario_id_is_missing(self, chat: Chat, scenario_id):
        """A null or empty scenario_id counts as missing."""
        outcome = chat({"scenario_id": scenario_id, "text": "Hi"})

        assert_error(outcome, 400, ErrorText.MISSING_SCENARIO_ID)

    @pytest.mark.parametrize("body", [{"scenario_id": SCENARIO_ID}, current("")])
    def test_missing_text(self, chat: Chat, body):
        """No (or an empty) text is a 400 with the documented text."""
        assert_error(chat(body), 400, "Missing required parameter: text")

    @pytest.mark.parametrize("token", [None, "", "not-a-token"])
    def test_not_authenticated(self, chat: Chat, token):
        """No token, an empty one or an unknown one is the 400 "not authenticated"."""
        assert_error(chat(current(), token=token), 400, "Request is not authenticated")

    def test_other_authorization_schemes_are_not_bearer(self, service: EmulatorService):
        """Only the Bearer scheme carries a token, and the scheme is case-insensitive."""
        body = json.dumps(current("Hi")).encode()

        basic = service.handle_chat({"authorization": "Basic dG9rLTE="}, body)
        lower = service.handle_chat({"AUTHORIZATION": f"bearer {TOKEN}"}, body)

        assert_error(basic, 400, ErrorText.NOT_AUTHENTICATED)
        assert lower.status == 200

    def test_unknown_scenario(self, chat: Chat):
        """An unknown scenario_id is a 404 naming it."""
        outcome = chat(current(scenario_id="nope"))

        assert_error(outcome, 404, "No implementation found for scenario_id nope")

    def test_token_bound_to_another_scenario(self, chat: Chat):
        """A valid token used with a scenario it is not bound to is the same 404."""
        outcome = chat(current(), token=OTHER_TOKEN)

        assert_error(outcome, 404, f"No implementation found for scenario_id {SCENARIO_ID}")

    def test_unknown_conv_id(self, chat: Chat):
        """An unknown conv_id is a 400 naming it."""
        outcome = chat(current(conv_id="conv-404"))

        assert_error(outcome, 400, "Conversation conv_id conv-404 is not valid.")

    def test_conv_id_belongs_to_its_scenario(self, chat: Chat):
        """A conv_id of another scenario is not valid here."""
        other = chat({"scenario_id": OTHER_SCENARIO_ID, "text": "Hi"}, token=OTHER_TOKEN)
        conv_id = other.json()["conv_id"]

        outcome = chat(current(conv_id=conv_id))

        assert_error(outcome, 400, f"Conversation conv_id {conv_id} is not valid.")

    @pytest.mark.parametrize("conv_id", [None, ""])
    def test_null_or_empty_conv_id_starts_a_conversation(self, chat: Chat, conv_id):
        """A null or empty conv_id is the same as none."""
        assert chat(current(conv_id=conv_id)).json()["conv_id"] == "conv-1"

    def test_client_metadata_at_most_five_keys(self, chat: Chat):
        """Five metadata keys are fine; six are a 400."""
        five = {f"k{i}": i for i in range(5)}

        assert chat(current(client_metadata=five)).status == 200
        outcome = chat(current(client_metadata={**five, "k5": 5}))
        assert_error(outcome, 400, "client_metadata accepts at most 5 keys")

    def test_message_context_at_most_1000_characters(self, chat: Chat):
        """message_context is accepted up to 1000 characters, spaces included."""
        assert chat(current(message_context=" " * 1000)).status == 200
        outcome = chat(current(message_context="x" * 1001))
        assert_error(outcome, 400, "message_context is limited to 1000 characters")

    def test_bearer_wins_over_api_key(self, chat: Chat):
        """With a Bearer header, an api_key in the body does not make it legacy."""
        data = chat(legacy(api_key="whatever")).json()

        assert "src" in data

    def test_checks_run_in_the_documented_order(self, chat: Chat):
        """scenario_id, then text, then the token, then the scenario, then limits, then conv_id."""
        bad_limits = {"client_metadata": dict.fromkeys("abcdef", 1), "conv_id": "nope"}

        assert chat({}, token=None).text == ErrorText.MISSING_SCENARIO_ID
        assert chat({"scenario_id": "x"}, token=None).text == ErrorText.MISSING_TEXT
        assert chat(current(scenario_id="x"), token=None).text == ErrorText.NOT_AUTHENTICATED
        assert chat(current(scenario_id="x", **bad_limits)).status == 404
        assert chat(current(**bad_limits)).text == ErrorText.TOO_MANY_METADATA_KEYS


class TestLegacyFlavor:
    def test_first_message(self, chat: Chat):
        """The legacy answer is ord_number, conv_id and reply, without src."""
        outcome = chat(legacy(), token=None)

        data = outcome.json()
        assert list(data) == ["ord_number", "conv_id", "reply"]
        assert (data["ord_number"], data["conv_id"]) == (3, "conv-1")

    def test_continuation_omits_conv_id(self, chat: Chat):
        """A continuation is answered without conv_id, as the legacy document shows."""
        conv_id = chat(legacy(), token=None).json()["conv_id"]

        data = chat(legacy("Again", conv_id=conv_id), token=None).json()

        assert data == {"ord_number": 5, "reply": data["reply"]}

    def test_continuation_conv_id_is_an_option(self):
        """legacy_continuation_conv_id=True answers continuations with their conv_id too."""
        service = make_service(legacy_continuation_conv_id=True)
        first = service.handle_chat({}, json.dumps(legacy("a")).encode())
        conv_id = first.json()["conv_id"]
        body = json.dumps(legacy("b", conv_id=conv_id))

        data = service.handle_chat({}, body.encode()).json()

        assert data["conv_id"] == conv_id

    @pytest.mark.parametrize(
        "body",
        [
            legacy(api_key=""),
            legacy(api_key=None),
            {"api_key": API_KEY, "text": "Hi"},
            legacy(scenario_id=""),
            {"api_key": API_KEY, "scenario_id": SCENARIO_ID},
            legacy(text=""),
        ],
    )
    def test_missing_parameters(self, chat: Chat, body):
        """Any of api_key, scenario_id, text missing (or empty) is one 400 listing them."""
        outcome = chat(body, token=None)

        assert_error(outcome, 400, "Required parameters are: api_key, scenario_id, text")

    def test_without_api_key_it_is_the_current_flavor(self, chat: Chat):
        """A body with no api_key key and no Bearer header is an unauthenticated current request."""
        outcome = chat(current(), token=None)

        assert_error(outcome, 400, ErrorText.NOT_AUTHENTICATED)

    @pytest.mark.parametrize(
        "body",
        [
            legacy(api_key="wrong"),
            legacy(api_key=OTHER_API_KEY),
            legacy(scenario_id="unknown"),
        ],
        ids=["unknown-key", "key-of-another-scenario", "unknown-scenario"],
    )
    def test_unauthorized(self, chat: Chat, body):
        """A wrong api_key, or one not for that scenario, is a 401."""
        assert_error(chat(body, token=None), 401, "Unauthorized")

    def test_unknown_conv_id(self, chat: Chat):
        """An unknown conv_id is a 400 in the legacy wording."""
        outcome = chat(legacy(conv_id="abcd1234"), token=None)

        assert_error(outcome, 400, "conv_id abcd1234 does not exist")

    def test_message_context_limit(self, chat: Chat):
        """A message_context over 1000 characters is a 400 in the legacy wording."""
        outcome = chat(legacy(message_context="x" * 1001), token=None)

        assert_error(outcome, 400, "The message_context limit is 1000 characters")

    def test_client_metadata_limit(self, chat: Chat):
        """More than five metadata keys is the same 400 as in the current flavor."""
        outcome = chat(legacy(client_metadata=dict.fromkeys("abcdef", 1)), token=None)

        assert_error(outcome, 400, "client_metadata accepts at most 5 keys")

    def test_flavors_share_conversations(self, chat: Chat):
        """A conversation started with a token can be continued with the api_key."""
        conv_id = chat(current()).json()["conv_id"]

        assert chat(legacy(conv_id=conv_id), token=None).json()["ord_number"] == 5


class TestMalformedRequests:
    @pytest.mark.parametrize(
        ("body", "text"),
        [
            (b"", ErrorText.INVALID_JSON),
            (b"{not json", ErrorText.INVALID_JSON),
            (b"\xff\xfe\x00", ErrorText.INVALID_JSON),
            (b'{"scenario_id": NaN}', ErrorText.INVALID_JSON),
            (b"[" * 100_000, ErrorText.INVALID_JSON),
            (b"[]", ErrorText.BODY_NOT_AN_OBJECT),
            (b'"text"', ErrorText.BODY_NOT_AN_OBJECT),
            (b"null", ErrorText.BODY_NOT_AN_OBJECT),
        ],
        ids=["empty", "broken", "not-utf8", "nan", "too-deep", "list", "string", "null"],
    )
    def test_bodies_that_are_not_objects(self, chat: Chat, body, text):
        """A body that is not a JSON object is a 400 that says so."""
        assert_error(chat(body), 400, text)

    @pytest.mark.parametrize(
        ("field", "value", "text"),
        [
            ("text", 42, "Parameter text must be a string"),
            ("scenario_id", [SCENARIO_ID], "Parameter scenario_id must be a string"),
            ("conv_id", 7, "Parameter conv_id must be a string"),
            ("message_context", {}, "Parameter message_context must be a string"),
            ("client_metadata", ["a"], "Parameter client_metadata must be an object"),
            (
                "client_metadata",
                {"kb_topic": 1},
                "Parameter client_metadata.kb_topic must be a string",
            ),
            ("api_key", True, "Parameter api_key must be a string"),
        ],
    )
    def test_wrong_types(self, chat: Chat, field, value, text):
        """A field of the wrong JSON type is a 400 naming the field."""
        assert_error(chat(current(**{field: value})), 400, text)

    def test_rejected_requests_record_nothing(self, service: EmulatorService, chat: Chat):
        """A rejected request leaves no conversation behind."""
        chat(current(client_metadata=dict.fromkeys("abcdef", 1)))

        assert service.conversations() == ()

    def test_error_texts_with_odd_characters_are_encoded(self, chat: Chat):
        """A conv_id that cannot be encoded (a lone surrogate) is still echoed, replaced."""
        outcome = chat(json.dumps(current("a", conv_id="x\ud800y")).encode())

        assert outcome.body == b"Conversation conv_id x?y is not valid."


class TestRecord:
    def test_messages_of_a_conversation(self, service: EmulatorService, chat: Chat):
        """Every message is recorded with its ord_number, role, text, metadata and flavor."""
        conv_id = chat(current("Hello!", client_metadata={"userId": 12})).json()["conv_id"]
        answer = chat(legacy("Bye", conv_id=conv_id, message_context="ctx"), token=None).json()

        messages = service.messages(conv_id)

        assert [(m.ord_number, m.role) for m in messages] == [
            (1, Role.GREETING),
            (2, Role.USER),
            (3, Role.ASSISTANT),
            (4, Role.USER),
            (5, Role.ASSISTANT),
        ]
        greeting, hello, _, bye, reply = messages
        assert greeting.text == "Hi! How can I help you today?"
        assert hello.client_metadata == {"userId": 12}
        assert (hello.flavor, bye.flavor) == (Flavor.CURRENT, Flavor.LEGACY)
        assert (bye.text, bye.message_context, bye.client_metadata) == ("Bye", "ctx", None)
        assert reply.text == answer["reply"]
        assert {m.scenario_id for m in messages} == {SCENARIO_ID}
        assert {m.time for m in messages} == {NOW}

    def test_user_messages(self, service: EmulatorService, chat: Chat):
        """user_messages() lists what the user sent, in order."""
        conv_id = chat(current("one")).json()["conv_id"]
        chat(current("two", conv_id=conv_id))

        assert service.user_messages(conv_id) == ("one", "two")

    def test_conversations_in_creation_order(self, service: EmulatorService, chat: Chat):
        """conversations() lists every conversation, oldest first."""
        chat(current("a"))
        chat({"scenario_id": OTHER_SCENARIO_ID, "text": "b"}, token=OTHER_TOKEN)

        conversations = service.conversations()

        assert [(c.conv_id, c.scenario_id) for c in conversations] == [
            ("conv-1", SCENARIO_ID),
            ("conv-2", OTHER_SCENARIO_ID),
        ]

    def test_unknown_conversation(self, service: EmulatorService):
        """Asking for an unknown conversation is a KeyError."""
        with pytest.raises(KeyError):
            service.messages("nope")

    def test_export_is_json(self, service: EmulatorService, chat: Chat):
        """A recorded conversation exports to plain JSON types."""
        conv_id = chat(current(client_metadata={"kb_topic": "billing"})).json()["conv_id"]

        exported = service.conversation(conv_id).to_dict()

        assert exported["messages"][1] == {
            "conv_id": conv_id,
            "ord_number": 2,
            "role": "user",
            "text": "Hello!",
            "scenario_id": SCENARIO_ID,
            "flavor": "current",
            "time": "2026-01-02T03:04:05+00:00",
            "message_context": None,
            "client_metadata": {"kb_topic": "billing"},
        }

    def test_stats_count_outcomes(self, service: EmulatorService, chat: Chat):
        """stats() counts requests by outcome and by status."""
        chat(current())
        chat(current(), token=None)
        chat(current(scenario_id="x"))

        stats = service.stats()

        assert (stats.requests, stats.replied, stats.rejected, stats.faulted) == (3, 1, 2, 0)
        assert stats.by_status == {200: 1, 400: 1, 404: 1}
        assert (stats.conversations, stats.turns) == (1, 1)
        assert stats.to_dict()["by_status"] == {"200": 1, "400": 1, "404": 1}

    def test_reset_forgets_everything_but_configuration(self, service: EmulatorService, chat: Chat):
        """reset() clears the record, the counters and the fault script, not the rates."""
        chat(current())
        service.faults.script(["drop_before"])
        service.faults.set_rates({"rate_limit": 0.5})

        service.reset()

        assert service.conversations() == ()
        assert service.stats().requests == 0
        assert service.faults.pending == ()
        assert len(service.faults.rates) == 1

    def test_concurrent_requests_are_all_recorded(self, service: EmulatorService, chat: Chat):
        """Requests from many threads at once each get their own, consistent ord_number."""
        conv_id = chat(current()).json()["conv_id"]

        def send_some() -> None:
            for i in range(25):
                chat(current(f"m{i}", conv_id=conv_id))

        threads = [threading.Thread(target=send_some) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        messages = service.messages(conv_id)
        assert [m.ord_number for m in messages] == list(range(1, 204))
        assert [m.role for m in messages[1::2]] == [Role.USER] * 101


class TestConfiguration:
    def test_default_scenario(self):
        """With no scenarios, the service serves the demo one."""
        service = EmulatorService()

        outcome = service.handle_chat(
            {"Authorization": "Bearer demo-token"}, b'{"scenario_id": "demo", "text": "hi"}'
        )

        assert service.scenarios == (DEMO_SCENARIO,)
        assert outcome.status == 200

    def test_seed_makes_conv_ids_reproducible(self):
        """Two services with the same seed give the same conv_ids; they look random."""
        body = b'{"scenario_id": "demo", "text": "hi"}'
        headers = {"Authorization": "Bearer demo-token"}

        first = [EmulatorService(seed=7).handle_chat(headers, body).conv_id for _ in range(2)]
        conv_id = EmulatorService().handle_chat(headers, body).conv_id

        assert first[0] == first[1]
        assert conv_id is not None
        assert len(conv_id) == 16
        assert conv_id != first[0]

    def test_repeated_conv_id_is_a_bug_in_the_factory(self):
        """A conv_id factory that repeats itself is reported, not silently merged."""
        service = EmulatorService(conv_id_factory=lambda: "same")
        body, headers = (
            b'{"scenario_id": "demo", "text": "hi"}',
            {"Authorization": "Bearer demo-token"},
        )
        service.handle_chat(headers, body)

        with pytest.raises(RuntimeError, match="repeated 'same'"):
            service.handle_chat(headers, body)

    def test_scenario_ids_are_unique(self):
        """Two scenarios with one scenario_id are refused."""
        with pytest.raises(ValueError, match="same scenario_id"):
            EmulatorService(scenarios=(Scenario("a"), Scenario("a")))

    def test_latency_delays_every_response(self):
        """latency= is added to every outcome's delay."""
        service = EmulatorService(latency=0.25)

        outcome = service.handle_chat({}, b"{}")

        assert outcome.delay == 0.25

    def test_reprs_hide_credentials(self):
        """Neither a scenario's nor the service's repr shows a token or api_key."""
        scenario = Scenario("scn", tokens=("secret-token",), api_keys=("secret-key",))
        service = EmulatorService(scenarios=(scenario,))

        for text in (repr(scenario), repr(service)):
            assert "secret" not in text
        assert repr(scenario) == "<Scenario 'scn' tokens=1 api_keys=1>"
        assert repr(service) == "<EmulatorService scenarios=['scn'] conversations=0>"
