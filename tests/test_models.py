"""Reply and Turn: frozen values, and HTML turned into plain text."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from quickchat_async import Reply, Turn, html_to_text


class TestHtmlToText:
    @pytest.mark.parametrize(
        ("markup", "text"),
        [
            ("Hey there! 🙂", "Hey there! 🙂"),
            ("one<br>two", "one\ntwo"),
            ("one<br/>two<br />three<BR>four< br>", "one\ntwo\nthree\nfour< br>"),
            ("<b>bold</b> and <a href='x'>link</a>", "bold and link"),
            ("Fish &amp; chips &lt;3 &#39;yes&#39; &eacute;", "Fish & chips <3 'yes' é"),
            ("&lt;b&gt;not a tag&lt;/b&gt;", "<b>not a tag</b>"),
            ("2 < 3 and 5 > 4", "2 < 3 and 5 > 4"),
            ("<p>para</p><!-- note -->", "para"),
            ("", ""),
        ],
    )
    def test_conversion(self, markup, text):
        """<br> becomes a newline, other tags go, entities are unescaped last."""
        assert html_to_text(markup) == text


class TestReply:
    def test_text_is_derived_from_html(self):
        """text is computed from html; html stays exactly as sent."""
        reply = Reply(conv_id="c", html="a<br>b &amp; c", ord_number=3, src=0)

        assert reply.text == "a\nb & c"
        assert reply.html == "a<br>b &amp; c"
        assert str(reply) == reply.text

    def test_frozen(self):
        """A Reply cannot be changed."""
        reply = Reply(conv_id="c", html="hi")

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            reply.html = "changed"  # type: ignore[misc]

    def test_equality_ignores_raw(self):
        """Two replies with the same fields are equal whatever their raw JSON."""
        assert Reply(conv_id="c", html="hi", raw={"x": 1}) == Reply(conv_id="c", html="hi")


class TestTurn:
    def test_kb_topic_from_metadata(self):
        """A turn's kb_topic is the one it was sent with."""
        now = dt.datetime.now(dt.UTC)
        reply = Reply(conv_id="c", html="hi")

        with_topic = Turn("q", reply, now, now, metadata={"kb_topic": "billing"})
        without = Turn("q", reply, now, now)

        assert with_topic.kb_topic == "billing"
        assert without.kb_topic is None
        assert without.context is None
