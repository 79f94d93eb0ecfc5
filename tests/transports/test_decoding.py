"""Bounded content decoding: what the transports inflate, never past the room they give."""

from __future__ import annotations

import gzip
import zlib

import pytest

from quickchat_async._transports._decoding import BoundedDecoder, UndecodableError


TEXT = b'{"reply": "' + b"hello " * 2000 + b'"}'


def raw_deflate(data: bytes) -> bytes:
    """Deflate without zlib's header, as some servers send `Content-Encoding: deflate`."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def decode_all(decoder: BoundedDecoder, body: bytes, chunk: int = 97) -> bytes:
    return b"".join(decoder.feed(body[i : i + chunk], 1 << 30) for i in range(0, len(body), chunk))


class TestEncodings:
    @pytest.mark.parametrize(
        ("encoding", "body"),
        [
            ("", TEXT),
            ("identity", TEXT),
            ("gzip", gzip.compress(TEXT)),
            ("x-gzip", gzip.compress(TEXT)),
            ("deflate", zlib.compress(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("deflate, gzip", gzip.compress(zlib.compress(TEXT))),
            (" GZIP ", gzip.compress(TEXT)),
        ],
    )
    def test_each_decodes_chunk_by_chunk(self, encoding: str, body: bytes) -> None:
        assert decode_all(BoundedDecoder(encoding), body) == TEXT

    def test_output_stops_at_the_room_given(self) -> None:
        bomb = gzip.compress(b"0" * 10_000_000)
        assert len(BoundedDecoder("gzip").feed(bomb, 1000)) == 1000


class TestRefused:
    def test_an_encoding_not_asked_for(self) -> None:
        with pytest.raises(UndecodableError, match="'br'"):
            BoundedDecoder("br")

    def test_too_many_stacked(self) -> None:
        with pytest.raises(UndecodableError, match="4 stacked"):
            BoundedDecoder("gzip, gzip, gzip, gzip")

    def test_corrupt_gzip(self) -> None:
        with pytest.raises(UndecodableError, match="corrupt compressed data"):
            BoundedDecoder("gzip").feed(b"\x1f\x8b not gzip at all", 1000)

    def test_deflate_that_is_neither_zlib_nor_raw(self) -> None:
        with pytest.raises(UndecodableError, match="corrupt compressed data"):
            BoundedDecoder("deflate").feed(b"\xff\xff\xff\xff not deflate", 1000)
