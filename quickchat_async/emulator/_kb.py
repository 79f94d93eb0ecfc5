"""The emulator's Knowledge Base and its deterministic reply engine.

An `Article` has an id, a title, an HTML-ish body and tags. A request's
`client_metadata.kb_topic` restricts the candidates to the articles tagged with that topic and
the untagged ones, as Quickchat documents; with no topic every article is a candidate.

Replies are chosen by plain token overlap, so a test can predict them: the question and each
article are lower-cased and split into words, a few stopwords are dropped and plurals folded
("returns" is "return"); a word found in an article's title scores 2, in its body or tags 1.
The best score wins, ties go to the earlier article. A greeting ("hello", "hi there") gets a
greeting, a question that matches nothing gets a fallback, and a name found in the request's
`message_context` ("The user's name is John.") opens the reply with "Hi John! ".
"""

from __future__ import annotations

import html
import importlib.resources
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs


__all__ = ["Article", "KnowledgeBase", "KnowledgeBaseError", "bundled_kb", "load_kb"]

_APOSTROPHES = "'\u2019"
_WORD = re.compile(rf"[^\W_]+(?:[{_APOSTROPHES}][^\W_]+)*")
_TAG = re.compile(r"<[^>]*>")
_NO_APOSTROPHES = str.maketrans("", "", _APOSTROPHES)
_STOPWORDS = frozenset(
    {
        "a", "about", "an", "and", "any", "are", "be", "can", "could", "do", "does", "for",
        "from", "have", "how", "i", "if", "in", "is", "it", "me", "my", "of", "on", "or", "our",
        "please", "the", "there", "this", "to", "us", "was", "we", "what", "when", "where",
        "which", "will", "with", "would", "you", "your",
    }
)  # fmt: skip
#: Words that open a greeting ("hello", "good morning"); a greeting has no other words.
_GREETINGS = frozenset(
    {"hello", "hi", "hey", "hiya", "howdy", "morning", "afternoon", "evening", "bonjour", "salut"}
)
_GREETING_WORDS = _GREETINGS | {"good", "there", "everyone", "all"}
_NAME = re.compile(
    rf"\b(?:user[{_APOSTROPHES}]?s[{_APOSTROPHES}]?|my)\s+name\s+is\s+"
    rf"([^\W\d_]+(?:[{_APOSTROPHES}-][^\W\d_]+)*)",
    re.IGNORECASE,
)

#: What the greeting message of a new conversation says (ord_number 1).
GREETING = "Hi! How can I help you today?"


class KnowledgeBaseError(ValueError):
    """A Knowledge Base file or article could not be used; the message says why and where."""


def _words(text: str) -> list[str]:
    """Lower-cased words of `text`, with apostrophes dropped ("user's" is "users")."""
    return [w.translate(_NO_APOSTROPHES) for w in _WORD.findall(text.casefold())]


def _fold(word: str) -> str:
    """Fold plurals and "-ing" forms, well enough to match questions to articles.

    "returns" is "return", "deliveries" "delivery", "contacting" "contact", "shipping" "ship".
    """
    if len(word) > 5 and word.endswith("ing"):  # noqa: PLR2004 -- keep "ring", "sing"
        stem = word[:-3]
        doubled = stem[-1] == stem[-2] and stem[-1] not in "aeiouls"
        return stem[:-1] if doubled else stem
    if len(word) > 4 and word.endswith("ies"):  # noqa: PLR2004 -- "ies" needs a stem
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):  # noqa: PLR2004
        return word[:-1]
    return word


def _terms(text: str) -> frozenset[str]:
    """The words that count for matching: no stopwords, plurals folded."""
    return frozenset(_fold(w) for w in _words(text) if w not in _STOPWORDS)


def _plain(html_text: str) -> str:
    """Text of an HTML-ish string: tags become spaces, entities are decoded."""
    return html.unescape(_TAG.sub(" ", html_text))


def _non_empty_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KnowledgeBaseError(f"{what} must be a non-empty string, not {value!r}.")
    return value


def _tags(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class Article:
    """One Knowledge Base article.

    Attributes:
        id: a stable identifier, unique within its Knowledge Base.
        title: a short title; may contain HTML entities such as `&amp;`.
        body: the answer, HTML-ish: `<br>` line breaks, maybe `<b>` and entities.
        tags: the topics it belongs to; an untagged article is available under every topic.
    """

    id: str
    title: str
    body: str
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tags)

    def is_available(self, kb_topic: str | None) -> bool:
        """Whether a request filtered on `kb_topic` (None: no filter) may draw on this article."""
        return kb_topic is None or not self.tags or kb_topic in self.tags

    @classmethod
    def from_dict(cls, data: object, *, where: str = "article") -> Article:
        """Build an article from its JSON form `{id, title, body, tags?}`.

        Raises:
            KnowledgeBaseError: a field is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise KnowledgeBaseError(f"{where} must be an object, not {type(data).__name__}.")
        fields: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
        unknown = sorted(set(fields) - {"id", "title", "body", "tags"})
        if unknown:
            raise KnowledgeBaseError(f"{where} has unknown fields: {', '.join(unknown)}.")
        tags = fields.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):  # pyright: ignore[reportUnknownVariableType]
            raise KnowledgeBaseError(f"{where}: tags must be a list of non-empty strings.")
        return cls(
            id=_non_empty_str(fields.get("id"), f"{where}: id"),
            title=_non_empty_str(fields.get("title"), f"{where}: title"),
            body=_non_empty_str(fields.get("body"), f"{where}: body"),
            tags=tags,  # pyright: ignore[reportUnknownArgumentType]
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that `from_dict` and `load_kb` read."""
        return {"id": self.id, "title": self.title, "tags": list(self.tags), "body": self.body}


@attrs.frozen
class _Indexed:
    """An article with its terms, computed once."""

    article: Article
    title_terms: frozenset[str]
    other_terms: frozenset[str]

    def score(self, question: frozenset[str]) -> int:
        return 2 * len(question & self.title_terms) + len(question & self.other_terms)


def _index(articles: Sequence[Article]) -> tuple[_Indexed, ...]:
    return tuple(
        _Indexed(
            article=a,
            title_terms=_terms(_plain(a.title)),
            other_terms=_terms(_plain(a.body) + " " + " ".join(a.tags)),
        )
        for a in articles
    )


def _articles(value: Iterable[Article]) -> tuple[Article, ...]:
    articles = tuple(value)
    if not articles:
        raise KnowledgeBaseError("A Knowledge Base needs at least one article.")
    seen: set[str] = set()
    for article in articles:
        if article.id in seen:
            raise KnowledgeBaseError(f"Two articles have the id {article.id!r}.")
        seen.add(article.id)
    return articles


@attrs.frozen
class KnowledgeBase:
    """An ordered collection of articles, and the reply engine that draws on them.

    Attributes:
        articles: the articles; their order breaks ties between equally good matches.
    """

    articles: tuple[Article, ...] = attrs.field(converter=_articles)
    _indexed: tuple[_Indexed, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_indexed", _index(self.articles))

    @property
    def topics(self) -> tuple[str, ...]:
        """Every tag used by an article, in order of first use."""
        return tuple(dict.fromkeys(t for a in self.articles for t in a.tags))

    def best_match(self, text: str, *, kb_topic: str | None = None) -> Article | None:
        """The article that answers `text` best under `kb_topic`, or None if none matches."""
        question = _terms(text)
        best: Article | None = None
        best_score = 0
        for indexed in self._indexed:
            if not indexed.article.is_available(kb_topic):
                continue
            score = indexed.score(question)
            if score > best_score:  # strictly better: ties keep the earlier article
                best, best_score = indexed.article, score
        return best

    def reply(
        self, text: str, *, kb_topic: str | None = None, message_context: str | None = None
    ) -> str:
        """The AI Agent's reply to `text`: HTML-ish, with `<br>` line breaks.

        Args:
            text: the user's message.
            kb_topic: the topic filter, or None for the whole Knowledge Base.
            message_context: the request's context; a name in it is used to greet the user.
        """
        name = name_in_context(message_context)
        if is_greeting(text):
            hello = f"Hi {name}!" if name else "Hi there!"
            return f"{hello} How can I help you today?<br>{self._offer(kb_topic)}"
        opening = f"Hi {name}! " if name else ""
        article = self.best_match(text, kb_topic=kb_topic)
        if article is None:
            return (
                f"{opening}I'm sorry, I couldn't find an answer to that in our Knowledge Base."
                f"<br>{self._offer(kb_topic)}"
            )
        return f"{opening}{article.body}<br><br>Source: {article.title}"

    def _offer(self, kb_topic: str | None) -> str:
        topics = [kb_topic] if kb_topic is not None else list(self.topics)
        if not topics:
            return "Ask me anything."
        listed = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + " or " + topics[-1]
        return f"Ask me about {listed} questions."

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that `load_kb` reads."""
        return {"articles": [a.to_dict() for a in self.articles]}

    @classmethod
    def from_dict(cls, data: object, *, source: str = "Knowledge Base") -> KnowledgeBase:
        """Build a Knowledge Base from `{"articles": [...]}` or a bare list of articles.

        Raises:
            KnowledgeBaseError: the data does not have that shape.
        """
        if isinstance(data, dict) and set(data) == {"articles"}:  # pyright: ignore[reportUnknownArgumentType]
            data = data["articles"]  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(data, list):
            raise KnowledgeBaseError(
                f"{source} must hold a list of articles, or an object with an 'articles' list."
            )
        items: list[object] = data  # pyright: ignore[reportUnknownVariableType]
        return cls(
            Article.from_dict(item, where=f"{source}: article #{number}")
            for number, item in enumerate(items, start=1)
        )


def is_greeting(text: str) -> bool:
    """Whether `text` is only a greeting ("Hello!", "hi there", "Good morning")."""
    words = _words(text)
    return bool(words) and set(words) <= _GREETING_WORDS and not _GREETINGS.isdisjoint(words)


def name_in_context(message_context: str | None) -> str | None:
    """The user's name, if `message_context` says it ("The user's name is John.")."""
    if not message_context:
        return None
    match = _NAME.search(message_context)
    return match.group(1) if match else None


def load_kb(path: str | Path) -> KnowledgeBase:
    """Read a Knowledge Base from a JSON file, to replace the bundled one.

    The file holds `{"articles": [{"id", "title", "body", "tags"?}, ...]}` or just the list.

    Raises:
        KnowledgeBaseError: the file cannot be read, is not UTF-8 JSON, or has the wrong shape.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KnowledgeBaseError(f"Cannot read the Knowledge Base {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise KnowledgeBaseError(f"The Knowledge Base {path} is not UTF-8 text.") from exc
    except json.JSONDecodeError as exc:
        raise KnowledgeBaseError(
            f"The Knowledge Base {path} is not valid JSON "
            f"(line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    return KnowledgeBase.from_dict(data, source=str(path))


def bundled_kb() -> KnowledgeBase:
    """The Knowledge Base shipped with the emulator: a fictional outdoor shop.

    Tags: `billing`, `shipping`, `technical`; three articles are untagged.
    """
    text = (
        importlib.resources.files(__name__.rpartition(".")[0])
        .joinpath("kb.json")
        .read_text("utf-8")
    )
    return KnowledgeBase.from_dict(json.loads(text), source="bundled kb.json")
