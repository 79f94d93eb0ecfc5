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
from typing import Final


__all__ = ["ACCEPT_ENCODING", "BoundedDecoder", "UndecodableError"]

#: What the SDK's requests accept (its default `Accept-Encoding`).
ACCEPT_ENCODING: Final = "gzip, deflate"
#: The most encodings one body may stack ("gzip, gzip" is two).
_MAX_STAGES: Final = 3


class UndecodableError(Exception):
    """The body's Content-Encoding is not one the SDK decodes, or the data is corrupt."""


class _Inflate:
    """One zlib stage: gzip, or deflate (zlib-wrapped, or raw as some servers send it).

    Input that zlib could not inflate within the room it was given (`unconsumed_tail`) is kept
    and goes first the next time: a stage of stacked encodings often stops there.
    """

    __slots__ = ("_decompressor", "_fed", "_raw_fallback")

    def __init__(self, encoding: str) -> None:
        gzip = encoding in {"gzip", "x-gzip"}
        self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self._raw_fallback = not gzip
        self._fed = False

    @property
    def backlog(self) -> int:
        """How many bytes of input wait for room to be inflated."""
        return len(self._decompressor.unconsumed_tail)

    @property
    def ended(self) -> bool:
        """Whether the compressed stream came to its end (or no byte of it came at all)."""
        return self._decompressor.eof or not self._fed

    def feed(self, data: bytes, room: int) -> bytes:
        """Inflate `data` after the input kept from before, returning at most `room` bytes."""
        decompressor = self._decompressor
        if decompressor.unconsumed_tail:
            data = decompressor.unconsumed_tail + data
        self._fed = self._fed or bool(data)
        try:
            return decompressor.decompress(data, room)
        except zlib.error as exc:
            if not self._raw_fallback:
                raise UndecodableError(f"corrupt compressed data ({exc})") from None
            self._raw_fallback = False  # "deflate" as raw deflate, without the zlib header
            self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data, room)


class BoundedDecoder:
    """Decodes a body chunk by chunk, never holding more than the cap of decoded bytes.

    Args:
        content_encoding: the response's Content-Encoding header ("" for none).

    Raises:
        UndecodableError: an encoding the SDK does not decode, or too many of them.
    """

    __slots__ = ("_stages",)

    def __init__(self, content_encoding: str) -> None:
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

    def feed(self, data: bytes, room: int) -> bytes:
        """The decoded bytes of `data`: at most `room` of them (more exist if it returns `room`).

        What a stage could not inflate within `room` waits for the next call, or `finish`.

        Raises:
            UndecodableError: corrupt compressed data.
        """
        for stage in self._stages:
            data = stage.feed(data, room)
        return data

    def finish(self, room: int) -> bytes:
        """At the end of the body: the decoded bytes still held back, at most `room` of them.

        Raises:
            UndecodableError: corrupt compressed data, or a compressed stream cut short (the
                body ended before it did).
        """
        out: list[bytes] = []
        left = room
        while left > 0:
            backlog = [stage.backlog for stage in self._stages]
            chunk = self.feed(b"", left)
            out.append(chunk)
            left -= len(chunk)
            if not chunk and backlog == [stage.backlog for stage in self._stages]:
                break  # nothing more comes out
        if left > 0 and not all(stage.ended for stage in self._stages):
            raise UndecodableError("compressed data cut short: the body ended before it did")
        return b"".join(out)
