"""The Knowledge Base and the reply engine: kb_topic filtering, greetings, names, custom files."""

from __future__ import annotations

import json

import pytest

from quickchat_async.emulator import (
    Article,
    EmulatorService,
    KnowledgeBase,
    KnowledgeBaseError,
    bundled_kb,
    load_kb,
)

from .conftest import TOKEN, Chat, current, legacy, make_service


RETURN_POLICY = "What is your return policy?"


def reply_to(chat: Chat, text: str, **fields) -> str:
    outcome = chat(current(text, **fields))
    assert outcome.status == 200, outcome.text
    return outcome.json()["reply"]


class TestBundledKnowledgeBase:
    def test_shape(self):
        """The bundled shop has billing, shipping and technical articles, and untagged ones."""
        kb = bundled_kb()

        assert kb.topics == ("billing", "shipping", "technical")
        assert 8 <= len(kb.articles) <= 12
        assert any(not a.tags for a in kb.articles)
        assert any("<br>" in a.body for a in kb.articles)
        assert any("&amp;" in a.body for a in kb.articles)

    def test_same_question_different_topics(self, chat: Chat):
        """The return-policy question is answered from billing or shipping, by kb_topic."""
        billing = reply_to(chat, RETURN_POLICY, client_metadata={"kb_topic": "billing"})
        shipping = reply_to(chat, RETURN_POLICY, client_metadata={"kb_topic": "shipping"})

        assert "refund" in billing
        assert "card" in billing
        assert "return label" in shipping
        assert "parcel" in shipping
        assert billing != shipping

    def test_without_topic_every_article_counts(self):
        """With no kb_topic, the best article of the whole base wins (ties: first one)."""
        kb = bundled_kb()

        assert kb.best_match(RETURN_POLICY) == kb.best_match(RETURN_POLICY, kb_topic="billing")
        assert kb.best_match("Where is my parcel? Tracking please").id == "shipping-tracking"

    def test_untagged_articles_answer_under_any_topic(self, chat: Chat):
        """An untagged article is available whatever the kb_topic."""
        reply = reply_to(chat, "How can I contact you?", client_metadata={"kb_topic": "billing"})

        assert "help@pebble-and-pine.example" in reply

    def test_articles_of_other_topics_are_left_out(self, chat: Chat):
        """Under a topic with nothing on the question, the fallback answers."""
        reply = reply_to(chat, RETURN_POLICY, client_metadata={"kb_topic": "technical"})

        assert reply.startswith("I'm sorry, I couldn't find an answer")
        assert "<br>" in reply

    def test_unknown_topic_leaves_untagged_articles(self):
        """A topic no article has leaves only the untagged articles."""
        kb = bundled_kb()

        assert kb.best_match(RETURN_POLICY, kb_topic="gardening") is None
        assert kb.best_match("gift wrapping", kb_topic="gardening").id == "general-gift-wrapping"

    def test_topic_must_be_present_on_every_request(self, chat: Chat):
        """Once a request of the conversation lacked kb_topic, the filter no longer applies."""
        conv_id = chat(current("Hello")).json()["conv_id"]  # no kb_topic on the first request

        reply = reply_to(
            chat, RETURN_POLICY, conv_id=conv_id, client_metadata={"kb_topic": "shipping"}
        )

        assert "refund" in reply  # the unfiltered best match, not the shipping article

    def test_topic_value_may_change(self, chat: Chat):
        """The kb_topic value may change between requests while the key stays present."""
        first = chat(current("Hello", client_metadata={"kb_topic": "billing"})).json()

        reply = reply_to(
            chat,
            RETURN_POLICY,
            conv_id=first["conv_id"],
            client_metadata={"kb_topic": "shipping"},
        )

        assert "return label" in reply

    def test_null_topic_keeps_the_key_without_filtering(self, chat: Chat):
        """A null kb_topic answers from the whole base, and keeps the conversation filterable."""
        conv_id = chat(current("Hello", client_metadata={"kb_topic": None})).json()["conv_id"]

        reply = reply_to(
            chat, RETURN_POLICY, conv_id=conv_id, client_metadata={"kb_topic": "shipping"}
        )

        assert "return label" in reply


class TestReplies:
    @pytest.mark.parametrize("text", ["Hello!", "hi", "Hi there", "Good morning", "hey!!"])
    def test_greetings(self, chat: Chat, text):
        """A greeting gets a greeting, with a <br> and the topics to ask about."""
        reply = reply_to(chat, text)

        assert reply == (
            "Hi there! How can I help you today?<br>"
            "Ask me about billing, shipping or technical questions."
        )

    def test_greeting_under_a_topic(self, chat: Chat):
        """Under a kb_topic, the greeting offers that topic."""
        reply = reply_to(chat, "hello", client_metadata={"kb_topic": "shipping"})

        assert reply.endswith("Ask me about shipping questions.")

    def test_question_with_a_greeting_is_answered(self, chat: Chat):
        """A greeting followed by a question is a question."""
        assert "Source: Payment methods" in reply_to(chat, "Hi, can I pay with PayPal?")

    def test_article_reply_keeps_its_html(self, chat: Chat):
        """An article's body is sent with its <br>, <b> and entities, and names its source."""
        reply = reply_to(chat, "Which payment methods do you accept?")

        assert "<b>Visa</b>" in reply
        assert "Pebble &amp; Pine" in reply
        assert reply.endswith("<br><br>Source: Payment methods")

    def test_fallback(self, chat: Chat):
        """A question that matches nothing gets the fallback."""
        reply = reply_to(chat, "Quantum chromodynamics?")

        assert reply == (
            "I'm sorry, I couldn't find an answer to that in our Knowledge Base.<br>"
            "Ask me about billing, shipping or technical questions."
        )

    @pytest.mark.parametrize(
        "context",
        [
            "The user's name is John.",
            "The users name is John.",
            "the user’s name is John",
            "Premium customer. My name is John, from Lyon.",
        ],
    )
    def test_name_from_message_context(self, chat: Chat, context):
        """A name in message_context opens the reply with "Hi <name>! "."""
        greeting = reply_to(chat, "Hello!", message_context=context)
        answer = reply_to(chat, RETURN_POLICY, message_context=context)

        assert greeting.startswith("Hi John! How can I help you today?")
        assert answer.startswith("Hi John! Once your return")

    def test_name_in_the_legacy_flavor(self, chat: Chat):
        """The legacy document's own context example greets John."""
        outcome = chat(legacy("Hello!", message_context="The users name is John."), token=None)

        assert outcome.json()["reply"].startswith("Hi John!")

    def test_compound_names(self):
        """Names with a hyphen or an apostrophe are kept whole."""
        kb = bundled_kb()

        assert kb.reply("hi", message_context="The user's name is Jean-Luc.").startswith(
            "Hi Jean-Luc!"
        )
        assert kb.reply("hi", message_context="The user's name is O'Brien").startswith(
            "Hi O'Brien!"
        )

    def test_context_without_a_name(self, chat: Chat):
        """A message_context without a name changes nothing."""
        assert reply_to(chat, "hi", message_context="VIP customer").startswith("Hi there!")

    def test_replies_are_deterministic(self):
        """The same question always gets the same reply."""
        first, second = make_service(), make_service()
        body = json.dumps(current("How long does delivery take?")).encode()
        headers = {"Authorization": f"Bearer {TOKEN}"}

        assert first.handle_chat(headers, body).body == second.handle_chat(headers, body).body


class TestCustomKnowledgeBase:
    def test_load_kb_replaces_the_bundled_articles(self, tmp_path):
        """A service given a loaded Knowledge Base answers from it only."""
        path = tmp_path / "kb.json"
        path.write_text(
            json.dumps(
                {
                    "articles": [
                        {"id": "w", "title": "Warranty", "tags": ["billing"], "body": "2 years."},
                        {"id": "r", "title": "Returns", "body": "Write to us.<br>Thanks."},
                    ]
                }
            )
        )
        service = make_service(knowledge_base=load_kb(path))
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def ask(text: str) -> str:
            body = json.dumps(current(text)).encode()
            return service.handle_chat(headers, body).json()["reply"]

        assert ask("How long is the warranty?") == "2 years.<br><br>Source: Warranty"
        assert ask(RETURN_POLICY) == "Write to us.<br>Thanks.<br><br>Source: Returns"
        assert "Ask me about billing questions." in ask("hello")

    def test_a_bare_list_is_accepted(self, tmp_path):
        """The file may hold the list of articles alone."""
        path = tmp_path / "kb.json"
        path.write_text(json.dumps([{"id": "a", "title": "A", "body": "B"}]))

        assert load_kb(path).articles == (Article(id="a", title="A", body="B"),)

    def test_round_trip(self, tmp_path):
        """to_dict() writes what load_kb() reads."""
        path = tmp_path / "kb.json"
        path.write_text(json.dumps(bundled_kb().to_dict()))

        assert load_kb(path) == bundled_kb()

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"{", r"not valid JSON \(line 1, column 2"),
            (b"\xff\xfe", "not UTF-8"),
            (b'{"items": []}', "list of articles"),
            (b"[]", "at least one article"),
            (b"[1]", "article #1 must be an object"),
            (b'[{"id": "a", "title": "t"}]', "article #1: body must be a non-empty string"),
            (b'[{"id": "", "title": "t", "body": "b"}]', "id must be a non-empty string"),
            (b'[{"id": "a", "title": "t", "body": "b", "tags": "x"}]', "tags must be a list"),
            (b'[{"id": "a", "title": "t", "body": "b", "tag": []}]', "unknown fields: tag"),
            (
                b'[{"id": "a", "title": "t", "body": "b"}, {"id": "a", "title": "u", "body": "c"}]',
                "Two articles have the id 'a'",
            ),
        ],
    )
    def test_bad_files(self, tmp_path, content, message):
        """A bad file is a KnowledgeBaseError that says what is wrong, and where."""
        path = tmp_path / "kb.json"
        path.write_bytes(content)

        with pytest.raises(KnowledgeBaseError, match=message) as caught:
            load_kb(path)
        assert isinstance(caught.value, ValueError)

    def test_missing_file(self, tmp_path):
        """A file that does not exist is a KnowledgeBaseError naming it."""
        with pytest.raises(KnowledgeBaseError, match=r"Cannot read .*nope\.json"):
            load_kb(tmp_path / "nope.json")

    def test_built_in_python(self):
        """A Knowledge Base can be built from Article objects directly."""
        kb = KnowledgeBase((Article("x", "Opening hours", "9 to 5.", tags="hours"),))
        service = EmulatorService(knowledge_base=kb)

        assert kb.articles[0].tags == ("hours",)
        assert service.knowledge_base.best_match("opening hours?") == kb.articles[0]
