"""The Chat endpoint's input rules, checked before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal, overload

from ._exceptions import ValidationError
from ._models import JSONValue


__all__ = [
    "MAX_CONTEXT_CHARS",
    "MAX_METADATA_KEYS",
    "check_context",
    "check_conv_id",
    "check_count",
    "check_kb_topic",
    "check_metadata",
    "check_metadata_size",
    "check_text",
]

#: The documented limit of `client_metadata` keys per request.
MAX_METADATA_KEYS = 5
#: The documented limit of `message_context`, spaces included.
MAX_CONTEXT_CHARS = 1000

_JSON_CHECK = json.JSONEncoder(allow_nan=False, check_circular=True)


def check_text(text: object) -> str:
    """The user's message: a non-empty string."""
    if not isinstance(text, str):
        raise ValidationError(f"text must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise ValidationError("text must not be empty: Quickchat needs a message to answer.")
    return text


def check_context(context: object, *, name: str = "context") -> str | None:
    """The optional `message_context`: a string of at most 1000 characters."""
    if context is None:
        return None
    if not isinstance(context, str):
        raise ValidationError(f"{name} must be a string or None, not {type(context).__name__}.")
    if len(context) > MAX_CONTEXT_CHARS:
        raise ValidationError(
            f"{name} is {len(context)} characters long; Quickchat accepts at most "
            f"{MAX_CONTEXT_CHARS} (spaces included). Shorten it."
        )
    return context


def check_kb_topic(kb_topic: object) -> str | None:
    """A Knowledge Base topic: a non-empty string, or None."""
    if kb_topic is None:
        return None
    if not isinstance(kb_topic, str) or not kb_topic:
        raise ValidationError(f"kb_topic must be a non-empty string or None, not {kb_topic!r}.")
    return kb_topic


def check_metadata(
    metadata: object, *, name: str = "metadata", allow_kb_topic: bool = False
) -> dict[str, JSONValue]:
    """Client metadata: string keys, JSON values; returns a private copy.

    Args:
        metadata: the mapping to check (None means empty).
        name: the argument's name, for the message.
        allow_kb_topic: whether a `kb_topic` key may appear. Conversations keep their topic in
            `kb_topic`, which enforces the rule that it is sent on every turn.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{name} must be a mapping or None, not {type(metadata).__name__}.")
    copy: dict[str, JSONValue] = {}
    for key, value in metadata.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(key, str):
            raise ValidationError(f"{name} keys must be strings, not {key!r}.")
        if key == "kb_topic" and not allow_kb_topic:
            raise ValidationError(
                f"Set the Knowledge Base topic with kb_topic=..., not inside {name}: a "
                "conversation keeps kb_topic on every request, as Quickchat requires."
            )
        copy[key] = value
    check_metadata_size(copy, name=name)
    try:
        _JSON_CHECK.encode(copy)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{name} values must be JSON (str, int, float, bool, None, lists and dicts): {exc}."
        ) from None
    return copy


def check_metadata_size(metadata: Mapping[str, object], *, name: str = "client_metadata") -> None:
    """At most five keys, as the endpoint documents (kb_topic included)."""
    if len(metadata) > MAX_METADATA_KEYS:
        keys = ", ".join(sorted(metadata))
        raise ValidationError(
            f"{name} would carry {len(metadata)} keys ({keys}); Quickchat accepts at most "
            f"{MAX_METADATA_KEYS}, kb_topic included. Drop some."
        )


@overload
def check_count(value: object, *, name: str, minimum: int) -> int: ...
@overload
def check_count(
    value: object, *, name: str, minimum: int, optional: Literal[True]
) -> int | None: ...
def check_count(value: object, *, name: str, minimum: int, optional: bool = False) -> int | None:
    """An integer setting such as max_retries: at least `minimum` (None allowed if optional)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = " or None" if optional else ""
        raise ValidationError(f"{name} must be an integer >= {minimum}{allowed}, not {value!r}.")
    return value


def check_conv_id(conv_id: object) -> str | None:
    """A conversation ID: a non-empty string, or None for a new conversation."""
    if conv_id is not None and (not isinstance(conv_id, str) or not conv_id):
        raise ValidationError(f"conv_id must be a non-empty string or None, not {conv_id!r}.")
    return conv_id
