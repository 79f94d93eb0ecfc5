"""Fault injection through the core: every kind, scripts, rates and their JSON commands."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from quickchat_async.emulator import (
    Action,
    EmulatorService,
    ErrorText,
    Fault,
    FaultInjector,
    FaultKind,
)

from .conftest import TOKEN, Chat, current, make_service


BEFORE = [
    FaultKind.RATE_LIMIT,
    FaultKind.UNAVAILABLE,
    FaultKind.ERROR_BEFORE,
    FaultKind.DROP_BEFORE,
    FaultKind.HTML_502,
]
AFTER = [kind for kind in FaultKind if kind not in BEFORE]


def start(chat: Chat) -> str:
    """Start a conversation and return its conv_id."""
    conv_id = chat(current("Hello!")).conv_id
    assert conv_id is not None
    return conv_id


class TestKinds:
    def test_stable_names(self):
        """Kinds have stable string names, usable from a CLI or JSON."""
        assert [k.value for k in FaultKind] == [
            "rate_limit",
            "unavailable",
            "error_before",
            "drop_before",
            "html_502",
            "error_after",
            "drop_after",
            "truncated",
            "reset_mid_body",
            "not_json",
            "missing_reply",
            "slow_headers",
            "drip",
            "huge_body",
            "endless",
        ]
        assert FaultKind.parse("drip") is FaultKind.DRIP

    def test_unknown_name(self):
        """An unknown name is a ValueError listing the known ones."""
        with pytest.raises(ValueError, match="Unknown fault kind 'boom'; choose one of: rate_l"):
            FaultKind.parse("boom")

    @pytest.mark.parametrize("kind", BEFORE)
    def test_before_faults_record_nothing(self, service: EmulatorService, chat: Chat, kind):
        """A fault before the turn leaves the conversation as it was."""
        conv_id = start(chat)
        service.faults.script([kind])

        outcome = chat(current("lost", conv_id=conv_id))

        assert outcome.fault is kind
        assert not outcome.recorded
        assert not kind.records_turn
        assert service.user_messages(conv_id) == ("Hello!",)
        assert chat(current("next", conv_id=conv_id)).json()["ord_number"] == 5

    @pytest.mark.parametrize("kind", AFTER)
    def test_after_faults_record_the_turn(self, service: EmulatorService, chat: Chat, kind):
        """A fault after the turn leaves the message and its reply in the record."""
        conv_id = start(chat)
        service.faults.script([kind])

        outcome = chat(current("landed", conv_id=conv_id))

        assert outcome.fault is kind
        assert (outcome.conv_id, outcome.ord_number) == (conv_id, 5)
        assert kind.records_turn
        assert service.user_messages(conv_id) == ("Hello!", "landed")
        assert len(service.messages(conv_id)) == 5
        assert chat(current("next", conv_id=conv_id)).json()["ord_number"] == 7

    @pytest.mark.parametrize("kind", AFTER)
    def test_after_faults_spare_rejected_requests(self, service: EmulatorService, chat: Chat, kind):
        """A fault after the turn, drawn for a request the core rejects, is used up unseen."""
        service.faults.script([kind])

        outcome = chat(current(conv_id="nope"))

        assert (outcome.status, outcome.fault, outcome.action) == (400, None, Action.RESPOND)
        assert service.faults.pending == ()
        assert service.stats().by_fault == {}

    @pytest.mark.parametrize("kind", BEFORE)
    def test_before_faults_preempt_validation(self, chat: Chat, service: EmulatorService, kind):
        """A fault before the turn fires even for a request the core would reject."""
        service.faults.script([kind])

        assert chat(b"garbage").fault is kind

    @pytest.mark.parametrize(
        ("kind", "status", "text"),
        [
            (FaultKind.RATE_LIMIT, 429, ErrorText.TOO_MANY_REQUESTS),
            (FaultKind.UNAVAILABLE, 503, "Service Unavailable"),
            (FaultKind.ERROR_BEFORE, 500, "Internal Server Error"),
            (FaultKind.ERROR_AFTER, 500, "Internal Server Error"),
        ],
    )
    def test_plain_text_errors(self, service: EmulatorService, chat: Chat, kind, status, text):
        """429, 503 and 500 answer in plain text, 429 and 503 with Retry-After: 1."""
        service.faults.script([kind])

        outcome = chat(current())

        assert (outcome.status, outcome.text, outcome.action) == (status, text, Action.RESPOND)
        assert outcome.header("content-type") == "text/plain; charset=utf-8"
        expected_retry = "1" if status in {429, 503} else None
        assert outcome.header("retry-after") == expected_retry

    @pytest.mark.parametrize(
        ("retry_after", "header"),
        [
            (30, "30"),
            (0.5, "0.5"),
            (-3, "-3"),
            ("soon", "soon"),
            (
                dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                "Wed, 02 Jan 2030 03:04:05 GMT",
            ),
            (None, None),
        ],
    )
    def test_retry_after_values(self, service: EmulatorService, chat: Chat, retry_after, header):
        """Retry-After may be seconds, an HTTP date, garbage, negative, or absent."""
        service.faults.script([Fault("rate_limit", retry_after=retry_after)])

        assert chat(current()).header("retry-after") == header

    @pytest.mark.parametrize("kind", [FaultKind.DROP_BEFORE, FaultKind.DROP_AFTER])
    def test_drops_send_nothing(self, service: EmulatorService, chat: Chat, kind):
        """A dropped connection has no status, headers or body."""
        service.faults.script([kind])

        outcome = chat(current())

        assert (outcome.action, outcome.status, outcome.headers, outcome.body) == (
            Action.DROP,
            0,
            (),
            b"",
        )

    def test_html_502(self, service: EmulatorService, chat: Chat):
        """html_502 sends nginx's Bad Gateway page as HTML."""
        service.faults.script(["html_502"])

        outcome = chat(current())

        assert outcome.status == 502
        assert outcome.header("content-type") == "text/html"
        assert "<title>502 Bad Gateway</title>" in outcome.text
        assert "<center>nginx</center>" in outcome.text

    @pytest.mark.parametrize(
        ("kind", "action"),
        [(FaultKind.TRUNCATED, Action.TRUNCATE), (FaultKind.RESET_MID_BODY, Action.RESET)],
    )
    def test_cut_bodies(self, service: EmulatorService, chat: Chat, kind, action):
        """A cut body announces the whole reply's length, and half of it goes out."""
        service.faults.script([kind])

        outcome = chat(current())

        assert (outcome.status, outcome.action) == (200, action)
        assert outcome.header("content-length") == str(len(outcome.body))
        assert outcome.cut_after == len(outcome.body) // 2
        assert outcome.json()["ord_number"] == 3
        assert outcome.interval == 0.05

    def test_not_json(self, service: EmulatorService, chat: Chat):
        """not_json answers 200 with an HTML page."""
        service.faults.script(["not_json"])

        outcome = chat(current())

        assert outcome.status == 200
        assert outcome.header("content-type") == "text/html; charset=utf-8"
        with pytest.raises(ValueError, match="Expecting value"):
            outcome.json()

    def test_missing_reply(self, service: EmulatorService, chat: Chat):
        """missing_reply answers the documented JSON without its reply."""
        service.faults.script(["missing_reply"])

        data = chat(current()).json()

        assert data == {"conv_id": "conv-1", "ord_number": 3, "src": 0}

    def test_slow_headers(self, service: EmulatorService, chat: Chat):
        """slow_headers is the normal reply after its delay (5 s unless set)."""
        service.faults.script(["slow_headers", Fault("slow_headers", delay=0.2)])

        first, second = chat(current()), chat(current())

        assert (first.delay, second.delay) == (5.0, 0.2)
        assert (first.action, first.status, first.json()["ord_number"]) == (Action.RESPOND, 200, 3)

    def test_drip(self, service: EmulatorService, chat: Chat):
        """drip sends the normal reply in small chunks, slowly."""
        service.faults.script(["drip", Fault("drip", chunk_size=3, interval=0.01)])

        default, custom = chat(current()), chat(current())

        assert (default.action, default.chunk_size, default.interval) == (Action.DRIP, 8, 0.25)
        assert (custom.chunk_size, custom.interval) == (3, 0.01)
        assert custom.json()["conv_id"] == "conv-2"

    def test_huge_body(self, service: EmulatorService, chat: Chat):
        """huge_body sends valid JSON of the requested size, with a huge reply."""
        service.faults.script(["huge_body", Fault("huge_body", size=100_000)])

        default, custom = chat(current()), chat(current())

        assert len(default.body) == 4 * 1024 * 1024
        assert len(custom.body) == 100_000
        assert custom.header("content-length") == "100000"
        assert custom.json()["reply"].endswith("...")

    def test_endless(self, service: EmulatorService, chat: Chat):
        """endless opens a JSON reply and names the filler it repeats, with no length."""
        service.faults.script(["endless"])

        outcome = chat(current())

        assert outcome.action is Action.ENDLESS
        assert outcome.body == b'{"reply": "'
        assert outcome.filler == b"." * 16384
        assert outcome.header("content-length") is None

    def test_fault_delay_adds_to_latency(self, chat: Chat):
        """A fault's delay comes on top of the service's latency."""
        service = make_service(latency=0.5)
        service.faults.script([Fault("error_before", delay=1.0)])

        outcome = service.handle_chat({"authorization": f"Bearer {TOKEN}"}, b"{}")

        assert outcome.delay == 1.5

    def test_stats_count_faults(self, service: EmulatorService, chat: Chat):
        """Faulted requests are counted by kind and by status (0 for a drop)."""
        service.faults.script(["drop_before", "drop_after", "rate_limit", None])
        for _ in range(4):
            chat(current())

        stats = service.stats()

        assert (stats.requests, stats.faulted, stats.replied, stats.turns) == (4, 3, 1, 2)
        assert stats.by_fault == {"drop_before": 1, "drop_after": 1, "rate_limit": 1}
        assert stats.by_status == {0: 2, 429: 1, 200: 1}


class TestFaultOptions:
    @pytest.mark.parametrize(
        "options",
        [{"delay": -1}, {"delay": float("nan")}, {"interval": float("inf")}, {"chunk_size": 0}],
    )
    def test_bad_options(self, options):
        """Negative or non-finite times and empty chunks are refused."""
        with pytest.raises(ValueError):  # noqa: PT011 -- attrs and our validators word it
            Fault("drip", **options)

    def test_from_json(self):
        """A fault reads from a kind's name or an object of its options."""
        assert Fault.from_json("drip") == Fault(FaultKind.DRIP)
        assert Fault.from_json({"kind": "drip", "interval": 1}) == Fault("drip", interval=1.0)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (3, "kind's name or an object"),
            ({"delay": 1}, "kind's name or an object"),
            ({"kind": "drip", "speed": 1}, "Unknown fault field"),
            ({"kind": "drip", "chunk_size": 1.5}, "'chunk_size' has the wrong type"),
            ({"kind": "drip", "interval": True}, "'interval' has the wrong type"),
            ({"kind": "rate_limit", "retry_after": []}, "'retry_after' has the wrong type"),
            ({"kind": "nope"}, "Unknown fault kind"),
        ],
    )
    def test_from_bad_json(self, data, message):
        """A malformed fault is a ValueError that says what is wrong."""
        with pytest.raises(ValueError, match=message):
            Fault.from_json(data)

    def test_to_dict_round_trips(self):
        """to_dict() gives what from_json() reads."""
        fault = Fault("rate_limit", retry_after="soon", delay=0.1)

        assert Fault.from_json(json.loads(json.dumps(fault.to_dict()))) == fault


class TestScript:
    def test_script_is_a_fifo_with_gaps(self, service: EmulatorService, chat: Chat):
        """Scripted faults apply to the next requests in order; None lets one through."""
        service.faults.script(["rate_limit", None, FaultKind.UNAVAILABLE])
        service.faults.script([Fault("error_before")])

        statuses = [chat(current()).status for _ in range(5)]

        assert statuses == [429, 200, 503, 500, 200]

    def test_pending_and_clear(self, service: EmulatorService):
        """pending shows what is left; clear_script() and clear() empty it."""
        service.faults.script(["drip", None])

        assert service.faults.pending == (Fault("drip"), None)
        service.faults.clear_script()
        assert service.faults.pending == ()

    def test_script_takes_precedence_over_rates(self):
        """While the script lasts, rates are not drawn."""
        service = make_service(fault_rates={"rate_limit": 1.0})
        service.faults.script([None])
        headers = {"authorization": f"Bearer {TOKEN}"}
        body = json.dumps(current("a")).encode()

        assert service.handle_chat(headers, body).status == 200
        assert service.handle_chat(headers, body).status == 429


class TestRates:
    def test_seeded_rates_replay(self):
        """Two injectors with the same rates and seed draw the same faults."""
        rates = {"rate_limit": 0.2, "drop_after": 0.3}
        first, second = FaultInjector(rates, seed=4), FaultInjector(rates, seed=4)

        draws = [first.next_fault() for _ in range(50)]

        assert draws == [second.next_fault() for _ in range(50)]
        assert {None, Fault("rate_limit"), Fault("drop_after")} == set(draws)

    def test_rates_are_roughly_honoured(self):
        """Over many draws, each fault comes about as often as its rate says."""
        injector = FaultInjector({"rate_limit": 0.25, FaultKind.DRIP: 0.5}, seed=1)

        draws = [injector.next_fault() for _ in range(4000)]

        kinds = [None if f is None else f.kind for f in draws]
        assert 800 < kinds.count(FaultKind.RATE_LIMIT) < 1200
        assert 1800 < kinds.count(FaultKind.DRIP) < 2200
        assert 800 < kinds.count(None) < 1200

    def test_service_seed_drives_rates(self):
        """The service's seed makes its fault draws reproducible."""
        headers = {"authorization": f"Bearer {TOKEN}"}
        body = json.dumps(current("a")).encode()

        def statuses() -> list[int]:
            service = make_service(fault_rates={"unavailable": 0.5}, seed=11)
            return [service.handle_chat(headers, body).status for _ in range(30)]

        first = statuses()
        assert first == statuses()
        assert {200, 503} == set(first)

    @pytest.mark.parametrize(
        ("rates", "message"),
        [({"drip": 1.5}, r"within \[0, 1\]"), ({"drip": 0.6, "endless": 0.6}, "more than 1")],
    )
    def test_bad_rates(self, rates, message):
        """Rates outside [0, 1], or adding up to more than 1, are refused."""
        with pytest.raises(ValueError, match=message):
            FaultInjector(rates)

    def test_set_rates_and_reseed(self):
        """set_rates() replaces the rates and may reseed."""
        injector = FaultInjector({"drip": 1.0})
        injector.set_rates({"endless": 1.0}, seed=3)

        fault = injector.next_fault()

        assert fault is not None
        assert fault.kind is FaultKind.ENDLESS
        assert injector.rates == ((Fault("endless"), 1.0),)

    def test_fault_objects_as_rate_keys(self):
        """A rate may be given for a configured fault, not just a kind."""
        injector = FaultInjector({Fault("drip", interval=2.0): 1.0})

        assert injector.next_fault() == Fault("drip", interval=2.0)


class TestJSONCommands:
    def test_script_rates_and_clear(self):
        """configure() appends to the script, replaces rates, and clears first if asked."""
        injector = FaultInjector()
        injector.script(["drip"])

        injector.configure({"script": ["rate_limit", None, {"kind": "drip", "interval": 0.1}]})
        assert injector.pending == (
            Fault("drip"),
            Fault("rate_limit"),
            None,
            Fault("drip", interval=0.1),
        )

        injector.configure({"clear": True, "rates": {"unavailable": 0.5}, "seed": 1})
        assert injector.pending == ()
        assert injector.to_dict() == {
            "pending": [],
            "rates": [{"fault": Fault("unavailable").to_dict(), "rate": 0.5}],
        }

    def test_seed_alone_reseeds(self):
        """A command with only a seed replays the rates from that seed."""
        injector = FaultInjector({"drip": 0.5})
        injector.configure({"seed": 5})
        first = [injector.next_fault() for _ in range(20)]
        injector.configure({"seed": 5})

        assert [injector.next_fault() for _ in range(20)] == first

    @pytest.mark.parametrize(
        ("command", "message"),
        [
            ([], "must be a JSON object"),
            ({"scripts": []}, "Unknown faults command field"),
            ({"clear": 1}, "'clear' must be true or false"),
            ({"script": "drip"}, "'script' must be a list"),
            ({"rates": [1]}, "'rates' must be an object"),
            ({"seed": "1"}, "'seed' must be an integer"),
            ({"rates": {"drip": "1"}}, "rate of 'drip' must be a number"),
            ({"rates": {"drip": 2}}, r"within \[0, 1\]"),
            ({"script": ["nope"]}, "Unknown fault kind"),
        ],
    )
    def test_bad_commands_change_nothing(self, command, message):
        """A malformed command is a ValueError, and leaves script and rates as they were."""
        injector = FaultInjector({"drip": 0.1})
        injector.script(["endless"])

        with pytest.raises(ValueError, match=message):
            injector.configure(command)
        assert injector.pending == (Fault("endless"),)
        assert injector.rates == ((Fault("drip"), 0.1),)

    def test_repr(self):
        """The injector's repr counts what is pending."""
        injector = FaultInjector({"drip": 0.1})
        injector.script([None, "drip"])

        assert repr(injector) == "<FaultInjector pending=2 rates=1>"
