"""Content decoding with a bound: a small compressed body never inflates past the size cap.

The engines' own decoders inflate each chunk they receive whole: a few kilobytes of gzip that
inflate to a gigabyte took ~150 MB of memory before the size cap (`max_response_bytes`) could
refuse them. The transports read the raw bytes instead and inflate them here, asking zlib for no
more output than the room left under the cap, so memory stays within the cap whatever the
server sends. The SDK asks for the encodings the standard library decodes (`ACCEPT_ENCODING`);
a body in any other encoding cannot be read and is refused (`UndecodableError`).
"""

from __future__ import annotations

import zlib
from typing import Final, Protocol


__all__ = ["ACCEPT_ENCODING", "BoundedDecoder", "UndecodableError"]

#: What the SDK's requests accept (its default `Accept-Encoding`).
ACCEPT_ENCODING: Final = "gzip, deflate"
#: The most encodings one body may stack ("gzip, gzip" is two).
_MAX_STAGES: Final = 3
#: What an inner stage of stacked encodings may put out beyond twice the cap: compressed data is
#: hardly ever larger than what it inflates to, so more means a body crafted to waste work.
_SLACK: Final = 64 * 1024
#: The most gzip members one body may hold: each one's end has zlib copy the rest of the input,
#: so that thousands of empty members (20 bytes each) would cost seconds.
_MAX_MEMBERS: Final = 64
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_GZIP_MAGIC: Final = b"\x1f\x8b"


class UndecodableError(Exception):
    """The body's Content-Encoding is not one the SDK decodes, or the data is corrupt."""


class _Decompressor(Protocol):
    """What `zlib.decompressobj()` returns."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def unconsumed_tail(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


class _Inflate:
    """One zlib stage: gzip, or deflate (zlib-wrapped, or raw as some servers send it).

    Input that zlib could not inflate within the room it was given (`unconsumed_tail`) is kept
    and goes first the next time. A gzip body of several members is read member after member;
    bytes after the end of the stream that do not start another member (padding, garbage) are
    dropped, as httpx and urllib3 do.
    """

    __slots__ = ("_decompressor", "_fed", "_gzip", "_head", "_members", "_over", "_rest")

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in {"gzip", "x-gzip"}
        #: None between two gzip members: what follows tells whether another one starts.
        self._decompressor: _Decompressor | None = zlib.decompressobj(
            _GZIP_WBITS if self._gzip else zlib.MAX_WBITS
        )
        #: For "deflate": the first bytes, until zlib has accepted its 2-byte header; replayed
        #: as raw deflate if it refuses them. None once the header is settled.
        self._head: bytes | None = None if self._gzip else b""
        #: Bytes after a gzip member, not yet read (too few yet to tell another member).
        self._rest = b""
        self._members = 1
        self._fed = False
        #: The stream ended, and what follows is dropped.
        self._over = False

    @property
    def ended(self) -> bool:
        """Whether the compressed stream came to its end (or no byte of it came at all)."""
        decompressor = self._decompressor
        if decompressor is None:  # between gzip members: a lone 0x1f may begin another
            return not self._rest
        return self._over or decompressor.eof or not self._fed

    def feed(self, data: bytes, room: int) -> bytes:
        """Inflate `data` after the input kept from before, returning at most `room` bytes.

        Raises:
            UndecodableError: corrupt compressed data, or too many gzip members.
        """
        out: list[bytes] = []
        more: bytes | None = data
        while more is not None and not self._over:
            decompressor = self._decompressor
            if decompressor is None:
                decompressor, more = self._next_member(self._rest + more)
                if decompressor is None:
                    break
            elif decompressor.unconsumed_tail:
                more = decompressor.unconsumed_tail + more
            out.append(self._inflate(decompressor, more, room))
            room -= len(out[-1])
            more = self._after(decompressor, room)
        return b"".join(out)

    def _inflate(self, decompressor: _Decompressor, data: bytes, room: int) -> bytes:
        self._fed = self._fed or bool(data)
        if self._head is not None:
            self._head += data
        try:
            out = decompressor.decompress(data, room)
        except zlib.error as exc:
            return self._refused(exc, room)
        if self._head is not None and len(self._head) >= 2:  # noqa: PLR2004 -- zlib's header
            self._head = None
        return out

    def _after(self, decompressor: _Decompressor, room: int) -> bytes | None:
        """Once a stream or member ends: the input of what may be a next gzip member, or None."""
        if not decompressor.eof or self._over:
            return None
        if not self._gzip:
            self._over = True  # what follows a deflate stream is dropped
            return None
        self._decompressor, data = None, decompressor.unused_data
        if room <= 0 or not data:
            self._rest = data
            return None
        return data

    def _next_member(self, data: bytes) -> tuple[_Decompressor | None, bytes]:
        """After a gzip member: a decompressor for the next one and its input, if one starts.

        Raises:
            UndecodableError: more than `_MAX_MEMBERS` members.
        """
        self._rest = b""
        if len(data) < len(_GZIP_MAGIC) and _GZIP_MAGIC.startswith(data):
            self._rest = data  # too few bytes yet to tell
            return None, b""
        if not data.startswith(_GZIP_MAGIC):
            self._over = True  # not a member: padding or garbage, dropped
            return None, b""
        if self._members >= _MAX_MEMBERS:
            raise UndecodableError(f"more than {_MAX_MEMBERS} gzip members")
        self._members += 1
        self._decompressor = zlib.decompressobj(_GZIP_WBITS)
        return self._decompressor, data

    def _refused(self, exc: zlib.error, room: int) -> bytes:
        """The data zlib refused: raw deflate (then inflated as such), or corrupt data.

        Raises:
            UndecodableError: corrupt compressed data.
        """
        head = self._head
        if head is None:
            raise UndecodableError(f"corrupt compressed data ({exc})") from None
        self._head = None  # "deflate" as raw deflate, without the zlib header
        self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
        return self.feed(head, room)


class BoundedDecoder:
    """Decodes a body chunk by chunk, never holding more than the cap of decoded bytes.

    The last stage inflates within the room the caller gives; a stage before it (stacked
    encodings) may put out at most twice the cap and some slack in all, so that no body makes
    the decoder hold or work through much more than the cap.

    Args:
        content_encoding: the response's Content-Encoding header ("" for none).
        limit: the cap of decoded bytes (`max_response_bytes`).

    Raises:
        UndecodableError: an encoding the SDK does not decode, or too many of them.
    """

    __slots__ = ("_budgets", "_stages")

    def __init__(self, content_encoding: str, *, limit: int) -> None:
        names = [name.strip().lower() for name in content_encoding.split(",") if name.strip()]
        names = [name for name in names if name != "identity"]
        if len(names) > _MAX_STAGES:
            raise UndecodableError(f"{len(names)} stacked content encodings")
        unknown = [name for name in names if name not in {"gzip", "x-gzip", "deflate"}]
        if unknown:
            raise UndecodableError(
                f"the content encoding {unknown[0]!r}, which the SDK did not ask for "
                f"(it accepts {ACCEPT_ENCODING})"
            )
        # Encodings are listed in the order they were applied: undo the last one first.
        self._stages = [_Inflate(name) for name in reversed(names)]
        #: What each stage before the last may still put out.
        self._budgets = [2 * limit + _SLACK] * max(len(self._stages) - 1, 0)

    def feed(self, data: bytes, room: int) -> bytes:
        """The decoded bytes of `data`: at most `room` of them (more exist if it returns `room`).

        What the last stage could not inflate within `room` waits for the next call.

        Raises:
            UndecodableError: corrupt compressed data, or stacked encodings whose inner data
                outgrows the cap.
        """
        stages, budgets = self._stages, self._budgets
        if not stages:
            return data
        over_budget = False
        for i, budget in enumerate(budgets):
            data = stages[i].feed(data, budget + 1)
            if len(data) > budget:  # no more of it: enough to fill the cap, or a crafted body
                over_budget, data = True, data[:budget]
            budgets[i] = budget - len(data)
        out = stages[-1].feed(data, room)
        if over_budget and len(out) < room:
            raise UndecodableError("stacked compressed data larger than max_response_bytes allows")
        return out

    def finish(self, room: int) -> bytes:
        """At the end of the body: the decoded bytes still held back, at most `room` of them.

        Raises:
            UndecodableError: corrupt compressed data, or a compressed stream cut short (the
                body ended before it did).
        """
        out: list[bytes] = []
        left = room
        while left > 0 and (chunk := self.feed(b"", left)):
            out.append(chunk)
            left -= len(chunk)
        if left > 0 and not all(stage.ended for stage in self._stages):
            raise UndecodableError("compressed data cut short: the body ended before it did")
        return b"".join(out)
