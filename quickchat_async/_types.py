"""The small shared types: the "not given" sentinel, JSON values, the flavor, a secret."""

from __future__ import annotations

import enum
from typing import Final, TypeAlias


__all__ = ["NOT_GIVEN", "Flavor", "JSONValue", "NotGiven", "Secret"]

#: A value that survives a round trip through JSON.
JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


class NotGiven(enum.Enum):
    """The type of `NOT_GIVEN`: "use the default", where None means "no limit"."""

    NOT_GIVEN = enum.auto()

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN


class Flavor(str, enum.Enum):
    """Which of the Chat endpoint's two documented flavors a client speaks."""

    #: Bearer token auth, at https://app.quickchat.ai/chat.
    CURRENT = "current"
    #: The api_key in the JSON body, at https://chat.quickchat.ai/chat.
    LEGACY = "legacy"


class Secret:
    """A credential whose repr never shows it, so tracebacks formatted with locals stay clean.

    The value is read only with `reveal()`, inline where it is needed, never kept in a local.
    """

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def reveal(self) -> object:
        """The wrapped value."""
        return self._value

    def __repr__(self) -> str:
        return "None" if self._value is None else "<redacted>"
