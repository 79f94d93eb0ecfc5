"""Every input rule of the SDK, checked before anything is sent; one error type: ValidationError.

The Chat endpoint's rules (a message, at most 1000 characters of context, at most 5 metadata
keys), the client's settings (credentials, scenario_id, base_url, headers, counts and seconds)
and the stores' user keys. Nothing here does I/O or reads the environment.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Final, Literal, cast, overload

import httpx2

from ._exceptions import ValidationError
from ._types import Flavor, JSONValue, Secret


__all__ = [
    "MAX_CONTEXT_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_KEYS",
    "MAX_USER_KEY_CHARS",
    "check_base_url",
    "check_context",
    "check_conv_id",
    "check_count",
    "check_credential",
    "check_extra_body",
    "check_headers",
    "check_kb_topic",
    "check_metadata",
    "check_metadata_size",
    "check_no_secret",
    "check_rate",
    "check_scenario_id",
    "check_seconds",
    "check_text",
    "check_turn",
    "check_user_key",
    "nested_deeper_than",
]

#: The documented limit of `client_metadata` keys per request.
MAX_METADATA_KEYS: Final = 5
#: The documented limit of `message_context`, spaces included.
MAX_CONTEXT_CHARS: Final = 1000
#: The longest user key accepted. Keys are identifiers (a chat id, "telegram:42"), not content.
MAX_USER_KEY_CHARS: Final = 512
#: The deepest nesting of JSON the SDK sends or accepts in a reply (a mapping or a list is one
#: level). Far above any real metadata or reply, and far below what the encoders and decoders
#: the body and a stored conversation go through can take (the json module's recursion,
#: orjson's 254 levels when writing), so nothing between the user and the store can fail on it.
MAX_JSON_DEPTH: Final = 128
#: The body fields the Chat endpoint documents (both flavors); `extra_body` cannot replace them.
_DOCUMENTED_FIELDS: Final = frozenset(
    {"api_key", "scenario_id", "conv_id", "text", "client_metadata", "message_context"}
)
#: Headers the SDK sets itself; a caller may not replace them.
_RESERVED_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "content-length", "host"}
)

#: The characters a credential is made of: visible ASCII, from "!" to "~".
_VISIBLE_ASCII: Final = ("!", "~")

_JSON_CHECK: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=True)


def _utf8(text: str, name: str) -> str:
    """Refuse a string that cannot be sent as UTF-8 (it holds a lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{name} holds a lone surrogate ({text[exc.start]!r} at index {exc.start}: half of a "
            "UTF-16 pair, such as an emoji cut in two) and cannot be sent as UTF-8; check how "
            "the text was decoded."
        ) from None
    return text


def _is_container(value: object) -> bool:
    return isinstance(value, (Mapping, list, tuple))


def nested_deeper_than(value: object, limit: int) -> bool:
    """Whether mappings and lists in `value` nest more than `limit` levels deep.

    Without recursion, so no depth can overflow the stack; each container is visited once (a
    structure that contains itself is reported as too deep).
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        identity = id(item)
        children: list[object]
        if isinstance(item, Mapping):
            children = list(cast("Mapping[object, object]", item).values())
        elif isinstance(item, (list, tuple)):
            children = list(cast("list[object]", item))
        else:
            continue
        if depth > limit or identity in seen:
            return True
        seen.add(identity)
        stack.extend((child, depth + 1) for child in children if _is_container(child))
    return False


# --- a turn -----------------------------------------------------------------------------------


def check_text(text: object) -> str:
    """The user's message: a non-empty string."""
    if not isinstance(text, str):
        raise ValidationError(f"text must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise ValidationError("text must not be empty: Quickchat needs a message to answer.")
    return _utf8(text, "text")


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
    return _utf8(context, name)


def check_kb_topic(kb_topic: object) -> str | None:
    """A Knowledge Base topic: a non-empty string, or None."""
    if kb_topic is None:
        return None
    if not isinstance(kb_topic, str) or not kb_topic:
        raise ValidationError(f"kb_topic must be a non-empty string or None, not {kb_topic!r}.")
    return _utf8(kb_topic, "kb_topic")


def check_metadata(
    metadata: object,
    *,
    name: str = "metadata",
    allow_kb_topic: bool = False,
    max_keys: int | None = MAX_METADATA_KEYS,
) -> dict[str, JSONValue]:
    """Client metadata: string keys, JSON values; returns a private copy.

    Args:
        metadata: the mapping to check (None means empty).
        name: the argument's name, for the message.
        allow_kb_topic: whether a `kb_topic` key may appear. Conversations keep their topic in
            `kb_topic`, which enforces the rule that it is sent on every turn.
        max_keys: the most keys allowed (None: any number).
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
    if max_keys is not None:
        check_metadata_size(copy, name=name)
    if nested_deeper_than(copy, MAX_JSON_DEPTH):
        raise ValidationError(
            f"{name} is nested more than {MAX_JSON_DEPTH} levels deep (or contains itself); "
            "send flatter metadata."
        )
    try:
        _utf8(_JSON_CHECK.encode(copy), name)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{name} values must be JSON (str, int, float, bool, None, lists and dicts): {exc}."
        ) from None
    return copy


def check_extra_body(extra_body: object) -> dict[str, JSONValue]:
    """Fields to add to one request's body: JSON, and none the endpoint documents.

    Returns a private copy.
    """
    body = check_metadata(extra_body, name="extra_body", allow_kb_topic=True, max_keys=None)
    replaced = sorted(body.keys() & _DOCUMENTED_FIELDS)
    if replaced:
        raise ValidationError(
            f"extra_body may not set {', '.join(replaced)}: the SDK sends the documented fields "
            "itself (pass them as say()'s own arguments, or as the client's credential)."
        )
    return body


def check_no_secret(values: Mapping[str, JSONValue], secrets: Secret, *, name: str) -> None:
    """Refuse extra headers or body fields that would carry the credential.

    The message names the option and the key, never the value; the frame that raises holds
    no credential in a local (a traceback formatted with locals shows them).
    """
    found = next(
        (
            repr(key) if not _carries(key, None, secrets) else "(its name)"
            for key, value in values.items()
            if _carries(key, value, secrets)
        ),
        None,
    )
    if found is not None:
        raise ValidationError(
            f"{name} entry {found} carries the client's credential; the SDK sends it only "
            "where the flavor puts it (the Authorization header, or the legacy api_key)."
        )


def _carries(key: str, value: JSONValue, secrets: Secret) -> bool:
    encoded = _JSON_CHECK.encode(value)
    return any(
        secret and (secret in encoded or secret in key)
        for secret in cast("tuple[str, ...]", secrets.reveal())
    )


def check_metadata_size(metadata: Mapping[str, object], *, name: str = "client_metadata") -> None:
    """At most five keys, as the endpoint documents (kb_topic included)."""
    if len(metadata) > MAX_METADATA_KEYS:
        keys = ", ".join(sorted(metadata))
        raise ValidationError(
            f"{name} would carry {len(metadata)} keys ({keys}); Quickchat accepts at most "
            f"{MAX_METADATA_KEYS}, kb_topic included. Drop some."
        )


def check_turn(text: object, context: object, metadata: object) -> dict[str, JSONValue] | None:
    """A conversation turn's input; returns a private copy of its metadata (None if not given).

    The text is a non-empty string, the context at most 1000 characters, and the metadata JSON
    without `kb_topic` (a conversation keeps it itself).
    """
    check_text(text)
    check_context(context)
    return check_metadata(metadata) if metadata is not None else None


def check_conv_id(conv_id: object) -> str | None:
    """A conversation ID: a non-empty string, or None for a new conversation."""
    if conv_id is not None and (not isinstance(conv_id, str) or not conv_id):
        raise ValidationError(f"conv_id must be a non-empty string or None, not {conv_id!r}.")
    return conv_id


# --- numbers ----------------------------------------------------------------------------------


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


def _is_positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@overload
def check_seconds(value: object, *, name: str) -> float: ...
@overload
def check_seconds(value: object, *, name: str, optional: Literal[True]) -> float | None: ...
def check_seconds(value: object, *, name: str, optional: bool = False) -> float | None:
    """A duration such as `lock_ttl`: a positive, finite number of seconds (None if optional)."""
    if value is None and optional:
        return None
    if not _is_positive(value):
        allowed = " or None" if optional else ""
        raise ValidationError(
            f"{name} must be a positive number of seconds{allowed}, not {value!r}."
        )
    return float(value)  # type: ignore[arg-type] # _is_positive made sure it is a number


def check_rate(value: object, *, name: str) -> float | None:
    """A rate such as `per_second`: a positive, finite number, or None for no limit."""
    if value is not None and not _is_positive(value):
        raise ValidationError(f"{name} must be a positive number or None, not {value!r}.")
    return None if value is None else float(value)  # type: ignore[arg-type]


# --- the client's settings ---------------------------------------------------------------------


def check_credential(token: Secret, api_key: Secret, *, where: str) -> tuple[Flavor, Secret]:
    """Pick the flavor from the one credential given; `where` says where they came from.

    The raw values are only ever read inline, never bound to a local, so no frame of a failed
    check holds them; messages name the character and place, never the value.
    """
    if token.reveal() is not None and api_key.reveal() is not None:
        raise ValidationError(
            f"{where}: pass a token (current flavor, Bearer) or an api_key (legacy flavor), "
            "not both."
        )
    if token.reveal() is None and api_key.reveal() is None:
        raise ValidationError(
            "No credential: pass token=... (or set QUICKCHAT_API_TOKEN) for the current flavor, "
            "or api_key=... (or set QUICKCHAT_API_KEY) for the legacy one."
        )
    flavor, secret, name = (
        (Flavor.CURRENT, token, "token")
        if token.reveal() is not None
        else (Flavor.LEGACY, api_key, "api_key")
    )
    if not isinstance(secret.reveal(), str) or not str(secret.reveal()).strip():
        raise ValidationError(f"{name} must be a non-empty string.")
    if not all(_VISIBLE_ASCII[0] <= c <= _VISIBLE_ASCII[1] for c in str(secret.reveal())):
        raise ValidationError(_foreign_character(secret, name))
    return flavor, secret


def _foreign_character(secret: Secret, name: str) -> str:
    """Say which character of a credential is not visible ASCII, and where; never the rest.

    Credentials are visible ASCII; anything else was pasted along (a non-breaking or
    zero-width space, a line break, an accented letter) and could not be sent in a header.
    """
    index, char = next(
        (i, c)
        for i, c in enumerate(str(secret.reveal()))
        if not _VISIBLE_ASCII[0] <= c <= _VISIBLE_ASCII[1]
    )
    described = f"U+{ord(char):04X} {unicodedata.name(char, 'a control character')}"
    return (
        f"{name} holds {described} at position {index + 1} of "
        f"{len(str(secret.reveal()))}; a credential is made of visible ASCII characters only. "
        "Check how it was pasted or read (a non-breaking or zero-width space, a line break)."
    )


def check_scenario_id(scenario_id: object) -> str:
    """The AI Agent's ID: a non-empty string."""
    if not isinstance(scenario_id, str) or not scenario_id.strip():
        raise ValidationError(
            "scenario_id is required: pass scenario_id=... or set QUICKCHAT_SCENARIO_ID "
            "(it is the ID of your AI Agent)."
        )
    return _utf8(scenario_id, "scenario_id")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: A label of a host name as DNS takes it (IDNA-encoded): letters, digits, hyphens (and the
#: underscores some private names use), 1 to 63 of them.
_HOST_LABEL: Final = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _is_host_name(raw_host: str) -> bool:
    """Whether a URL's host (as httpx2 gives it: IDNA-encoded) is an IP or a valid DNS name."""
    try:
        ipaddress.ip_address(raw_host)
    except ValueError:
        name = raw_host.removesuffix(".")  # a fully qualified name may end with a dot
        return len(name) <= 253 and all(map(_HOST_LABEL.fullmatch, name.split(".")))  # noqa: PLR2004 -- DNS's limit
    return True


def check_base_url(base_url: object) -> str:
    """Check a base URL and return it without a trailing slash (or `/chat`).

    Plain `http://` is refused except to a loopback host, and so are credentials in the URL
    and hosts that are neither an IP address nor a host name DNS could look up.
    """
    if not isinstance(base_url, str):
        raise ValidationError(f"base_url must be a string, not {type(base_url).__name__}.")
    try:
        url = httpx2.URL(base_url)
    except httpx2.InvalidURL:
        raise ValidationError("base_url is not a valid URL.") from None
    if url.userinfo:
        raise ValidationError(
            "base_url must not embed credentials (user:password@host): pass token= or api_key=."
        )
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValidationError(
            "base_url must be an http(s) URL with a host, such as https://app.quickchat.ai."
        )
    if not _is_host_name(url.raw_host.decode("ascii")):
        raise ValidationError(
            f"base_url's host {url.host[:80]!r} is not a valid host name (labels of letters, "
            "digits and hyphens, each 1 to 63 long, 253 characters in all) nor an IP address."
        )
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ValidationError(
            f"base_url uses plain http:// to {url.host}, which would send the credential in "
            "clear text; use https://, or http:// only to a loopback host (127.0.0.1, localhost)."
        )
    if url.query or url.fragment:
        raise ValidationError("base_url must not have a query string or fragment.")
    path = url.path.rstrip("/").removesuffix("/chat")
    return str(url.copy_with(path=path or "/")).rstrip("/")


def check_headers(headers: object, *, name: str = "default_headers") -> dict[str, str]:
    """Extra request headers: string names and values, none that the SDK sets itself."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError(f"{name} must be a mapping of header names to values.")
    checked: dict[str, str] = {}
    for key, value in headers.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError(f"{name} must map header names to string values.")
        if key.lower() in _RESERVED_HEADERS:
            raise ValidationError(
                f"{name} may not set {key}: the SDK sets it (pass token= for auth)."
            )
        if any(c in key or c in value for c in "\r\n\x00"):
            raise ValidationError(f"{name} entry {key!r} holds a line break or NUL.")
        if not (key.isascii() and value.isascii()):
            raise ValidationError(
                f"{name} entry {key!r} holds a character that is not ASCII, which HTTP headers "
                "cannot carry as text; encode it (percent-encoding, base64) first."
            )
        checked[key] = value
    return checked


# --- stores -----------------------------------------------------------------------------------


def check_user_key(user_key: object) -> str:
    """A user key: a non-empty string of at most `MAX_USER_KEY_CHARS` characters.

    Any string the app chooses works ("4242", "telegram:4242", "acme/web/user-9"); it must be
    encodable as UTF-8, because stores keep it as text.
    """
    if not isinstance(user_key, str):
        raise ValidationError(f"user_key must be a string, not {type(user_key).__name__}.")
    if not user_key:
        raise ValidationError("user_key must not be empty: it names whose conversation it is.")
    if len(user_key) > MAX_USER_KEY_CHARS:
        raise ValidationError(
            f"user_key is {len(user_key)} characters long; the limit is {MAX_USER_KEY_CHARS}. "
            "Use an identifier (a chat or user ID), or a hash of a longer one."
        )
    return _utf8(user_key, "user_key")
