"""A small HTML tokenizer for what servers send: linear in the size of the text, whatever it is.

Replies carry light HTML (`<br>`, `<b>`), and proxies answer errors with HTML pages; both are
reduced to text here. Regular expressions that match a tag up to its `>` (or a `<title>` up to
its `</title>`) scan to the end of the text from every `<` that is never closed, which is
quadratic: 100 KB of unclosed tags blocked the event loop for seconds. The standard library's
`html.parser` rescans unclosed constructs too (on Python 3.11, 20 KB of `<a b="` take a
second). This tokenizer looks for each delimiter with one `str.find`, and stops looking for
what a failed search proved absent from the rest of the text, so no character is scanned more
than a few times.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterator
from typing import Final


__all__ = ["html_to_text", "page_text"]

#: What may follow `<` (or `</`) for the text to be a tag; anything else is a literal `<`.
_TAG_START: Final = frozenset(string.ascii_letters)
#: The characters of a tag's name.
_NAME: Final = frozenset(string.ascii_letters + string.digits + "-:")
#: Lowercases ASCII letters only, so that indices into the result are indices into the input.
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
#: Elements whose content is not text a person reads (in an error page).
_NOISE: Final = frozenset({"script", "style", "head"})


def _tokens(markup: str) -> Iterator[tuple[str, str, int]]:
    """Text and tags, in order: ("text", text, end) or ("tag", name, end), names lowercased.

    A start tag's name is plain ("b"); an end tag's starts with "/" ("/b"). Comments,
    declarations and processing instructions (`<!...>`, `<?...>`) are tags with an empty name.
    `end` is the index just after the token. A `<` that opens nothing (`a < b`, or a tag with
    no `>` after it) is text.
    """
    text_start = position = 0
    size = len(markup)
    while (start := markup.find("<", position)) >= 0:
        after = markup[start + 1 : start + 3]
        closing = after[:1] == "/"
        special = after[:1] in {"!", "?"}
        if not special and (after[1:2] if closing else after[:1]) not in _TAG_START:
            position = start + 1  # a literal `<`
            continue
        end = markup.find(">", start + 1)
        if end < 0:  # no `>` anywhere after: nothing from here on is a tag
            break
        if start > text_start:
            yield "text", markup[text_start:start], start
        name = ""
        if not special:
            name_end = name_start = start + 2 if closing else start + 1
            while name_end < end and markup[name_end] in _NAME:
                name_end += 1
            name = markup[name_start:name_end].translate(_ASCII_LOWER)
        yield "tag", f"/{name}" if closing else name, end + 1
        text_start = position = end + 1
    if text_start < size:
        yield "text", markup[text_start:], size


def html_to_text(markup: str) -> str:
    """Turn a reply's light HTML into plain text.

    `<br>` (in any spelling) becomes a newline, other tags are dropped and entities are
    unescaped, in that order, so an escaped `&lt;b&gt;` survives as the literal text `<b>`.
    """
    if "<" not in markup and "&" not in markup:
        return markup
    parts = [
        value if kind == "text" else "\n" if value in {"br", "/br"} else ""
        for kind, value, _ in _tokens(markup)
    ]
    return html.unescape("".join(parts))


def page_text(markup: str, *, limit: int, scan: int) -> str:
    """The text a person would read of an HTML page: its `<title>`, or else its body's text.

    Tags become spaces; `<script>`, `<style>` and `<head>` are dropped with their content;
    entities are unescaped. Whitespace is left as it is. The title is looked for in the whole
    page; the body's text only in its first `scan` characters, and no further than about
    `limit` characters of text (not counting the spaces around them).
    """
    lowered = markup.translate(_ASCII_LOWER)
    title = _title(markup, lowered)
    if title is not None:
        return html.unescape(title)
    parts: list[str] = []
    unclosed: set[str] = set()  # elements with no end tag in the rest of the text
    skip_to = collected = 0
    for kind, value, end in _tokens(markup[:scan]):
        if end <= skip_to:
            continue
        if kind == "text":
            parts.append(value)
            collected += len(value.strip())
            if collected > limit:
                break
            continue
        parts.append(" ")
        if value in _NOISE and value not in unclosed:
            close = lowered.find(f"</{value}", end)
            if close < 0:
                unclosed.add(value)
            else:
                after = markup.find(">", close)
                skip_to = len(markup) if after < 0 else after + 1
    return html.unescape("".join(parts))


def _title(markup: str, lowered: str) -> str | None:
    """The content of the first `<title>` that is closed, if any.

    Once an opening has no `>` or no `</title` after it, no later one can have either.
    """
    start = lowered.find("<title")
    if start < 0:
        return None
    opened = markup.find(">", start)
    if opened < 0:
        return None
    close = lowered.find("</title", opened + 1)
    return None if close < 0 else markup[opened + 1 : close]
