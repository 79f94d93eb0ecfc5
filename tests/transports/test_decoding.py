"""Bounded content decoding: what the transports inflate, never past the room they give."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib

import pytest

from quickchat_async._transports._base import CappedBody
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
        assert decode_all(BoundedDecoder(encoding, limit=1 << 30), body) == TEXT

    def test_output_stops_at_the_room_given(self) -> None:
        bomb = gzip.compress(b"0" * 10_000_000)
        assert len(BoundedDecoder("gzip", limit=1 << 30).feed(bomb, 1000)) == 1000


class TestWithinTheRoom:
    """What a stage cannot inflate within the room it is given waits, and is never lost."""

    #: Hardly compressible: each stage's output is about as large as the body.
    NOISE = random.Random(12).randbytes(50_000)  # noqa: S311 -- test data, not a secret

    @pytest.mark.parametrize("encoding", ["gzip", "deflate, gzip", "gzip, gzip"])
    def test_a_body_as_large_as_the_cap_comes_whole(self, encoding: str) -> None:
        body = gzip.compress(self.NOISE)
        if encoding != "gzip":
            inner = zlib.compress if encoding.startswith("deflate") else gzip.compress
            body = gzip.compress(inner(self.NOISE))
        capped = CappedBody(len(self.NOISE), encoding)
        for i in range(0, len(body), 1000):
            assert not capped.add(body[i : i + 1000])
        assert capped.content() == (self.NOISE, False)

    def test_small_rooms_lose_nothing(self) -> None:
        decoder = BoundedDecoder("gzip, gzip", limit=len(self.NOISE))
        body = gzip.compress(gzip.compress(self.NOISE))
        out = [decoder.feed(body[i : i + 4096], 1000) for i in range(0, len(body), 4096)]
        rest = decoder.finish(len(self.NOISE))
        assert b"".join(out) + rest == self.NOISE

    def test_the_end_gives_no_more_than_the_room(self) -> None:
        decoder = BoundedDecoder("gzip", limit=1 << 30)
        assert len(decoder.feed(gzip.compress(b"0" * 100_000), 10)) == 10
        assert len(decoder.finish(1000)) == 1000  # more held back: not an error


class TestWhatFollowsAStream:
    def test_gzip_members_are_read_one_after_the_other(self) -> None:
        capped = CappedBody(1000, "gzip")
        capped.add(gzip.compress(b'{"reply": "he') + gzip.compress(b'llo"}'))
        assert capped.content() == (b'{"reply": "hello"}', False)

    def test_a_bounded_number_of_members(self) -> None:
        """Each member's end costs a copy of the rest: 64 of them at most, not thousands."""
        capped = CappedBody(1000, "gzip")
        capped.add(gzip.compress(b"{}") + gzip.compress(b"") * 63)
        assert capped.content() == (b"{}", False)
        with pytest.raises(UndecodableError, match="more than 64 gzip members"):
            CappedBody(1000, "gzip").add(gzip.compress(b"") * 20_000)

    @pytest.mark.parametrize("chunk", [1, 1 << 20])
    def test_a_corrupt_member_after_the_first(self, chunk: int) -> None:
        body = bytearray(gzip.compress(b"A" * 600) + gzip.compress(b"B" * 600))
        body[-8] ^= 1  # the second member's checksum
        capped = CappedBody(1 << 20, "gzip")

        def read() -> tuple[bytes, bool]:
            for i in range(0, len(body), chunk):
                capped.add(bytes(body[i : i + chunk]))
            return capped.content()

        with pytest.raises(UndecodableError):
            read()

    @pytest.mark.parametrize("trailer", [b"\n", b"\x00", b"\x00\x00", b"garbage!"])
    def test_a_few_bytes_after_the_end(self, trailer: bytes) -> None:
        capped = CappedBody(1000, "gzip")
        capped.add(gzip.compress(b"{}") + trailer)
        assert capped.content() == (b"{}", False)

    @pytest.mark.parametrize("cut", [1, 2, 10])
    def test_a_next_member_cut_short(self, cut: int) -> None:
        """Even one byte into it (0x1f, the first of gzip's magic): never a body taken whole."""
        capped = CappedBody(1000, "gzip")
        capped.add(gzip.compress(b'{"reply": "he') + gzip.compress(b'llo"}')[:cut])
        with pytest.raises(UndecodableError, match="cut short"):
            capped.content()

    def test_stacked_and_over_the_cap_in_one_chunk(self) -> None:
        """A whole large body in one chunk is cut at the cap, as it is chunk by chunk."""
        noise = random.Random(3).randbytes(100_000)  # noqa: S311 -- over twice the cap + 64 KiB
        capped = CappedBody(1000, "gzip, gzip")
        assert capped.add(gzip.compress(gzip.compress(noise)))
        assert capped.content() == (noise[:1000], True)

    @pytest.mark.parametrize(
        ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
    )
    def test_bytes_after_the_end_are_dropped_not_kept(self, encoding, compress) -> None:
        capped = CappedBody(1000, encoding)
        capped.add(compress(b"{}"))
        tracemalloc.start()
        try:
            for _ in range(200):  # 13 MB of garbage after the end of the stream
                capped.add(b"x" * 65536)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert capped.content() == (b"{}", False)
        assert peak < 1_000_000

    @pytest.mark.parametrize("body", [zlib.compress(TEXT), raw_deflate(TEXT)], ids=["zlib", "raw"])
    def test_deflate_a_byte_at_a_time(self, body: bytes) -> None:
        capped = CappedBody(1 << 20, "deflate")
        for i in range(len(body)):
            capped.add(body[i : i + 1])
        assert capped.content() == (TEXT, False)


class TestRefused:
    def test_an_encoding_not_asked_for(self) -> None:
        with pytest.raises(UndecodableError, match="'br'"):
            BoundedDecoder("br", limit=1000)

    def test_too_many_stacked(self) -> None:
        with pytest.raises(UndecodableError, match="4 stacked"):
            BoundedDecoder("gzip, gzip, gzip, gzip", limit=1000)

    def test_corrupt_gzip(self) -> None:
        with pytest.raises(UndecodableError, match="corrupt compressed data"):
            BoundedDecoder("gzip", limit=1 << 30).feed(b"\x1f\x8b not gzip at all", 1000)

    def test_deflate_that_is_neither_zlib_nor_raw(self) -> None:
        with pytest.raises(UndecodableError, match="corrupt compressed data"):
            BoundedDecoder("deflate", limit=1 << 30).feed(b"\xff\xff\xff\xff not deflate", 1000)

    @pytest.mark.parametrize(
        ("encoding", "whole"),
        [
            ("gzip", gzip.compress(TEXT)),
            ("deflate", zlib.compress(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("gzip, gzip", gzip.compress(gzip.compress(TEXT))),
        ],
        ids=["gzip", "zlib deflate", "raw deflate", "gzip twice"],
    )
    def test_a_stream_cut_short(self, encoding: str, whole: bytes) -> None:
        capped = CappedBody(1 << 20, encoding)
        capped.add(whole[: len(whole) - 6])
        with pytest.raises(UndecodableError, match="cut short"):
            capped.content()

    def test_an_empty_body_is_empty_whatever_its_encoding(self) -> None:
        assert CappedBody(100, "gzip").content() == (b"", False)

    def test_stacked_data_that_inflates_to_nothing(self) -> None:
        """Inner data far larger than the cap, that never inflates (an endless gzip comment).

        Refused as soon as it outgrows twice the cap, instead of held and worked through.
        """
        endless_comment = b"\x1f\x8b\x08\x10\0\0\0\0\x00\xff" + b"a" * 1_000_000
        capped = CappedBody(100_000, "gzip, gzip")
        with pytest.raises(UndecodableError, match="larger than max_response_bytes allows"):
            capped.add(gzip.compress(endless_comment))
