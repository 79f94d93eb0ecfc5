"""Every input rule, checked before anything is sent: one error type, a message that helps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickchat_async import ValidationError
from quickchat_async._types import Flavor, Secret
from quickchat_async._validation import (
    MAX_CONTEXT_CHARS,
    MAX_METADATA_KEYS,
    MAX_USER_KEY_CHARS,
    check_base_url,
    check_context,
    check_conv_id,
    check_count,
    check_credential,
    check_headers,
    check_kb_topic,
    check_metadata,
    check_metadata_size,
    check_rate,
    check_scenario_id,
    check_seconds,
    check_text,
    check_user_key,
)

from .conftest import API_KEY, TOKEN, library_frames_with_locals


class TestText:
    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("", "empty"),
            ("   ", "empty"),
            ("\n\t", "empty"),
            (None, "must be a string"),
            (5, "int"),
        ],
    )
    def test_refused(self, text, match):
        """The message is a string with something in it."""
        with pytest.raises(ValidationError, match=match):
            check_text(text)

    def test_kept_as_is(self):
        """A message is passed on unchanged: spaces, quotes, newlines and emoji included."""
        text = ' Zażółć "gęślą" jaźń\n🙂 '

        assert check_text(text) is text

    def test_lone_surrogate(self):
        """Half of a UTF-16 pair cannot be sent as UTF-8: refused, naming where it is."""
        with pytest.raises(ValidationError, match=r"lone surrogate .* at index 7"):
            check_text("broken \ud800 text")

    def test_validation_error_is_a_value_error(self):
        """Bad input is a ValueError, so generic handlers catch it."""
        with pytest.raises(ValueError, match="empty"):
            check_text("")


class TestContext:
    def test_none_and_the_limit(self):
        """No context is fine, and so are exactly 1000 characters, spaces included."""
        assert check_context(None) is None
        assert check_context(" " * MAX_CONTEXT_CHARS) == " " * 1000

    def test_too_long(self):
        """A context over 1000 characters is refused, saying how long it is."""
        with pytest.raises(ValidationError, match=r"1001 characters long.*at most 1000"):
            check_context("x" * 1001)

    def test_not_a_string(self):
        """The message names the argument as the caller spelled it."""
        with pytest.raises(ValidationError, match="message_context must be a string or None"):
            check_context(5, name="message_context")

    def test_lone_surrogate(self):
        """A context that is not UTF-8 is refused too."""
        with pytest.raises(ValidationError, match="context holds a lone surrogate"):
            check_context("\udfff")


class TestKbTopic:
    @pytest.mark.parametrize("topic", ["", 5, ["billing"]])
    def test_refused(self, topic):
        """A topic is a non-empty string, or None."""
        with pytest.raises(ValidationError, match="kb_topic must be a non-empty string or None"):
            check_kb_topic(topic)

    def test_accepted(self):
        """A topic, or none."""
        assert check_kb_topic("billing") == "billing"
        assert check_kb_topic(None) is None


class TestMetadata:
    def test_private_copy(self):
        """The mapping is copied: changing the caller's dict later changes nothing."""
        original = {"userId": 12}
        copy = check_metadata(original)
        original["userId"] = 13

        assert copy == {"userId": 12}
        assert check_metadata(None) == {}

    @pytest.mark.parametrize(
        ("metadata", "match"),
        [
            ({str(i): i for i in range(6)}, "at most 5"),
            ({1: "x"}, "keys must be strings"),
            ({"x": {1, 2}}, "must be JSON"),
            ({"x": float("nan")}, "must be JSON"),
            ({"x": object()}, "must be JSON"),
            ("kb_topic=x", "must be a mapping"),
            ({"x": "\ud800"}, "lone surrogate"),
        ],
    )
    def test_refused(self, metadata, match):
        """Five string keys at most, with JSON values."""
        with pytest.raises(ValidationError, match=match):
            check_metadata(metadata)

    def test_nested_too_deeply(self):
        """A value nested past what JSON encoding can follow is refused, not a crash."""
        deep: list[object] = []
        for _ in range(100_000):
            deep = [deep]

        with pytest.raises(ValidationError, match="nested more than 128 levels deep"):
            check_metadata({"deep": deep})

    def test_kb_topic_has_its_own_argument(self):
        """kb_topic inside metadata is refused with a pointer to kb_topic=..."""
        with pytest.raises(ValidationError, match=r"kb_topic=\.\.\."):
            check_metadata({"kb_topic": "billing"})

        assert check_metadata({"kb_topic": "billing"}, allow_kb_topic=True) == {
            "kb_topic": "billing"
        }

    def test_size_counts_kb_topic(self):
        """Five keys, kb_topic included, is the documented limit; the message lists the keys."""
        check_metadata_size({str(i): i for i in range(MAX_METADATA_KEYS)})

        with pytest.raises(ValidationError, match=r"6 keys \(0, 1, 2, 3, 4, kb_topic\)"):
            check_metadata_size({**{str(i): i for i in range(5)}, "kb_topic": "t"})


class TestConvId:
    @pytest.mark.parametrize("conv_id", ["", 5, b"conv"])
    def test_refused(self, conv_id):
        """A conv_id is a non-empty string, or None for a new conversation."""
        with pytest.raises(ValidationError, match="conv_id must be a non-empty string"):
            check_conv_id(conv_id)

    def test_accepted(self):
        """Any non-empty string is passed on; the server decides whether it knows it."""
        assert check_conv_id("conv-uuid-1234") == "conv-uuid-1234"
        assert check_conv_id(None) is None


class TestNumbers:
    @pytest.mark.parametrize("value", [-1, 1.5, True, "2", None])
    def test_count_refused(self, value):
        """Counts are integers at least their minimum (booleans are not counts)."""
        with pytest.raises(ValidationError, match=r"max_retries must be an integer >= 0,"):
            check_count(value, name="max_retries", minimum=0)

    def test_count_optional(self):
        """An optional count accepts None, and says so when refusing."""
        assert check_count(None, name="max_history", minimum=0, optional=True) is None
        assert check_count(0, name="max_history", minimum=0) == 0
        with pytest.raises(ValidationError, match=">= 0 or None"):
            check_count(-1, name="max_history", minimum=0, optional=True)

    @pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "30", True, None])
    def test_seconds_refused(self, value):
        """Durations are positive, finite numbers of seconds."""
        with pytest.raises(ValidationError, match="lock_ttl must be a positive number of seconds"):
            check_seconds(value, name="lock_ttl")

    def test_seconds_accepted(self):
        """Integers and floats are seconds; None only where it is allowed."""
        assert check_seconds(2, name="t") == 2.0
        assert isinstance(check_seconds(2, name="t"), float)
        assert check_seconds(None, name="t", optional=True) is None

    @pytest.mark.parametrize("value", [0, -1, math.inf, True, "5"])
    def test_rate_refused(self, value):
        """A rate is a positive, finite number."""
        with pytest.raises(ValidationError, match="per_second must be a positive number or None"):
            check_rate(value, name="per_second")

    def test_rate_accepted(self):
        """None means no limit."""
        assert check_rate(None, name="per_second") is None
        assert check_rate(5, name="per_second") == 5.0


class TestCredential:
    def test_the_credential_picks_the_flavor(self):
        """A token means the current flavor, an api_key the legacy one."""
        assert check_credential(Secret(TOKEN), Secret(None), where="")[0] is Flavor.CURRENT
        assert check_credential(Secret(None), Secret(API_KEY), where="")[0] is Flavor.LEGACY

    def test_none(self):
        """No credential at all names both ways to give one."""
        with pytest.raises(ValidationError, match=r"QUICKCHAT_API_TOKEN.*QUICKCHAT_API_KEY"):
            check_credential(Secret(None), Secret(None), where="")

    def test_both(self):
        """A token and an api_key together are refused, saying where they came from."""
        with pytest.raises(ValidationError, match=r"^here: pass a token .* not both") as info:
            check_credential(Secret(TOKEN), Secret(API_KEY), where="here")

        assert TOKEN not in str(info.value)
        assert API_KEY not in str(info.value)

    @pytest.mark.parametrize("token", ["", "  ", "abc\n", "a\rb", "a\x00b", 42])
    def test_bad_values(self, token):
        """An empty, multi-line or non-string credential is refused, naming it, not showing it."""
        with pytest.raises(ValidationError, match=r"^token ") as info:
            check_credential(Secret(token), Secret(None), where="")

        assert str(token).strip() == "" or str(token) not in str(info.value)

    def test_no_frame_holds_it(self):
        """A refused credential is in no local variable of the checking frames."""
        with pytest.raises(ValidationError) as info:
            check_credential(Secret(TOKEN + "\n"), Secret(None), where="")

        assert TOKEN not in library_frames_with_locals(info.value)

    def test_secret_repr(self):
        """A wrapped credential shows as <redacted> (and None as None)."""
        assert repr(Secret(TOKEN)) == "<redacted>"
        assert repr(Secret(None)) == "None"
        assert Secret(TOKEN).reveal() == TOKEN


class TestScenarioId:
    @pytest.mark.parametrize("scenario_id", [None, "", "   ", 42])
    def test_required(self, scenario_id):
        """No scenario_id says where to put one."""
        with pytest.raises(
            ValidationError, match=r"scenario_id=\.\.\. or set QUICKCHAT_SCENARIO_ID"
        ):
            check_scenario_id(scenario_id)

    def test_lone_surrogate(self):
        """A scenario_id that is not UTF-8 is refused."""
        with pytest.raises(ValidationError, match="lone surrogate"):
            check_scenario_id("scn-\ud800")


class TestBaseURL:
    @pytest.mark.parametrize(
        ("base_url", "expected"),
        [
            ("https://example.com", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("https://example.com/chat", "https://example.com"),
            ("https://example.com/proxy/chat/", "https://example.com/proxy"),
            ("http://localhost:8765", "http://localhost:8765"),
            ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
            ("http://[::1]:8765", "http://[::1]:8765"),
            ("http://bot.localhost", "http://bot.localhost"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("https://example.com.", "https://example.com."),
            ("https://my_host.internal", "https://my_host.internal"),
            (f"https://{'a' * 63}.com", f"https://{'a' * 63}.com"),
        ],
    )
    def test_normalised(self, base_url, expected):
        """A trailing slash or /chat is dropped: requests go to {base_url}/chat, never doubled."""
        assert check_base_url(base_url) == expected

    @pytest.mark.parametrize(
        "base_url",
        [
            "http://example.com",
            "http://10.0.0.1:80",
            "http://quickchat.ai.localhost.evil.com",
            "http://0.0.0.0:8000",
        ],
    )
    def test_plain_http_refused_off_loopback(self, base_url):
        """http:// to a non-loopback host is refused: the credential would travel in clear text."""
        with pytest.raises(ValidationError, match="clear text"):
            check_base_url(base_url)

    @pytest.mark.parametrize(
        "host",
        [f"{'a' * 64}.com", "a..b", ".example.com", "a b", f"{'a.' * 127}com"],
    )
    def test_a_host_dns_cannot_look_up_is_refused(self, host):
        """A label over 63 characters, an empty one, a space, a name over 253 characters."""
        with pytest.raises(ValidationError, match="is not a valid host name"):
            check_base_url(f"https://{host}")

    def test_credentials_in_the_url(self):
        """user:password@host is refused, without echoing the password."""
        with pytest.raises(ValidationError, match="embed credentials") as info:
            check_base_url("https://me:s3cr3t@example.com")

        assert "s3cr3t" not in str(info.value)

    @pytest.mark.parametrize(
        ("base_url", "match"),
        [
            ("ftp://example.com", "http"),
            ("example.com", "http"),
            ("https://example.com/?x=1", "query string"),
            ("https://example.com/#top", "fragment"),
            ("https://[::1", "not a valid URL"),
            (7, "must be a string, not int"),
        ],
    )
    def test_refused(self, base_url, match):
        """Non-http(s), host-less, query-carrying or invalid base URLs are refused."""
        with pytest.raises(ValidationError, match=match):
            check_base_url(base_url)


class TestHeaders:
    @pytest.mark.parametrize(
        ("headers", "match"),
        [
            ({"Authorization": "Bearer other"}, "may not set Authorization"),
            ({"host": "evil"}, "may not set host"),
            ({"Content-Length": "1"}, "may not set Content-Length"),
            ({"X-Ok": 1}, "string values"),
            ({"X-Bad": "a\r\nInjected: yes"}, "line break"),
            (["x"], "mapping"),
        ],
    )
    def test_refused(self, headers, match):
        """Extra headers may not replace what the SDK sets, nor carry non-strings or line breaks."""
        with pytest.raises(ValidationError, match=match):
            check_headers(headers)

    def test_accepted(self):
        """Other headers are kept, User-Agent included; None is none."""
        headers = {"X-Trace": "abc", "User-Agent": "my-bot/1.0"}

        assert check_headers(headers) == headers
        assert check_headers(None) == {}


class TestUserKey:
    @pytest.mark.parametrize(
        ("user_key", "match"),
        [
            ("", "must not be empty"),
            (42, "must be a string, not int"),
            ("x" * (MAX_USER_KEY_CHARS + 1), "513 characters long; the limit is 512"),
            ("user-\ud800", "lone surrogate"),
        ],
    )
    def test_refused(self, user_key, match):
        """A user key is a non-empty, UTF-8 string of at most 512 characters."""
        with pytest.raises(ValidationError, match=match):
            check_user_key(user_key)

    @given(st.text(min_size=1, max_size=MAX_USER_KEY_CHARS).filter(str.isprintable))
    def test_any_identifier(self, user_key):
        """Any printable identifier the app chooses is a user key."""
        assert check_user_key(user_key) == user_key
