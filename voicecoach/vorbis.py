"""Ogg Vorbis by two encoders at once (libsndfile's libvorbis, one on each core), joined
into one logical stream at a long silence, so the file decodes to the session's samples
and length as one encoder's does, in every reader.

Why not two streams one after the other (a chained Ogg, which the format allows): the
libsndfile that python-soundfile ships (1.2.2) reads only the first of them and reports
an unknown length, and Chromium gives the file the first stream's duration (303 s of a
550 s session) and decodes 384 samples too many (measured; see README).

Why two encoders' packets can share one stream: encoders with the same settings write
byte-identical identification and setup headers, so the second one's audio packets decode
with the first one's headers. What does not carry over is the overlap of each packet's
block with its neighbours': a decoder outputs, between the centres of two consecutive
blocks, a quarter of each one's size (`centers`). So the join keeps the first encoder's
packets up to a silent one (a one-byte packet: no floor, it decodes to zeros, as it does
beside any neighbour) whose centre X lies in the silence, then the second encoder's from
a silent one whose centre Y is where it falls in the session, and between them silent
packets made here, whose blocks add up to exactly Y - X: the samples on each side of the
join are the very ones each encoder's own stream decodes to, and the second half lands
on its sample. Blocks are short or long (512 and 1024 samples here); between the centres
of two long blocks the sum is a multiple of half a short block, so the second encoder
starts on a grid (CUT_GRID) and the first's long blocks in the silence always leave a
bridge that fits. The page granule positions (the sample count each page ends at) are
written from the same sums; the last page's says the session's length, which trims the
second encoder's padding as it trimmed it in its own file.

Every assumption is checked on the encoders' own output before anything is joined: the
same headers, each page's granule position equal to the sums (which checks the block
sizes read from the packets), every long block's window flags naming its neighbours'
sizes (which checks where those flags sit), silent blocks where the session is silent,
and the bridge landing on Y. A stream that fails a check raises CannotJoin, with the
first encoder's file as it was: the session is then encoded again by one encoder
(audiofile.py), slower, never wrong; another libvorbis than the one python-soundfile
ships might write silence otherwise.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = ["CUT_GRID", "GUARD", "MIN_PART_SAMPLES", "CannotJoin", "find_cut", "join"]

CUT_GRID = 4096
"""The second encoder starts on a multiple of this: half a short block divides it (libvorbis's
short blocks are 256 or 512 samples; 512 at 22050 Hz, quality 0.4)."""

GUARD = 8192
"""Silence needed on each side of the cut: the join's blocks (the last silent one of the
first encoder, the bridge, the first long one of the second, 1024 samples each here) lie
in it, with room for the encoders to see nothing but silence around them."""

MIN_PART_SAMPLES = 30 * 22050
"""Shorter sessions take less time to encode than a second encoder takes to start."""


def find_cut(total_samples: int, silences: Sequence[tuple[int, int]]) -> int | None:
    """Where to cut a session for two encoders: on CUT_GRID, nearest its middle, with
    silence over [cut - GUARD, cut + GUARD); None if no silence is long enough, or the
    parts would be short."""
    from .parallel import cut_in_silence

    return cut_in_silence(total_samples, silences, grid=CUT_GRID, before=GUARD, after=GUARD,
                          min_part=MIN_PART_SAMPLES)


class CannotJoin(Exception):
    """The encoders' streams are not as the join needs them (the message says how)."""


# --- Ogg pages ------------------------------------------------------------------------

_HEADER = struct.Struct("<4sBBqIIIB")
"""capture pattern, version, flags, granule position, serial, sequence, CRC, segments"""
_CONTINUED = 1
"""A page's flag: its first segment goes on with the packet the page before ended in."""
_BODY_TARGET = 4096
"""A page is closed once its body reaches this (libogg's own size)."""

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, most significant bit first, no inversion) of a
    page with its CRC field zeroed. zlib's CRC-32 is the same polynomial bit-reversed,
    started and ended inverted: over bit-reversed bytes, with the inversions cancelled by
    the CRC of as many zero bytes, it gives the bit-reversed Ogg CRC, at C speed."""
    raw = zlib.crc32(page.translate(_REVERSED)) ^ zlib.crc32(bytes(len(page)))
    return int.from_bytes(raw.to_bytes(4, "little").translate(_REVERSED), "big")


def _page(flags: int, granule: int, serial: int, sequence: int, lacing: bytes,
          body: bytes) -> bytes:
    head = _HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(head + lacing + body)
    page[22:26] = crc(bytes(page)).to_bytes(4, "little")
    return bytes(page)


@dataclass
class _Stream:
    """One encoder's Ogg Vorbis file: its pages, and its packets in order (headers first).

    A packet is a run of segments ending with one shorter than 255 bytes; numpy arrays
    hold, per page, where it starts and ends and its header fields; per segment, where
    its bytes are, how many and on which page; per packet, its first and last segment
    and its size."""

    data: bytes
    page_start: npt.NDArray[np.int64]
    page_end: npt.NDArray[np.int64]
    flags: npt.NDArray[np.int64]
    granule: npt.NDArray[np.int64]
    serial: int
    segment_at: npt.NDArray[np.int64]
    """Where each segment's bytes are in `data`."""
    segment_size: npt.NDArray[np.int64]
    segment_page: npt.NDArray[np.int64]
    packet_first: npt.NDArray[np.int64]
    """Each packet's first segment."""
    packet_last: npt.NDArray[np.int64]
    """Each packet's last segment."""
    packet_size: npt.NDArray[np.int64]

    @classmethod
    def parse(cls, data: bytes) -> _Stream:
        starts, ends, flags, granules, serials, lacings, bodies = [], [], [], [], [], [], []
        at = 0
        while at < len(data):
            if at + _HEADER.size > len(data):
                raise CannotJoin(f"libsndfile's Ogg file ends inside a page at byte {at}")
            capture, version, flag, granule, serial, _, _, count = _HEADER.unpack_from(data, at)
            if capture != b"OggS" or version != 0:
                raise CannotJoin(f"libsndfile's Ogg file holds no page at byte {at}")
            lacing = data[at + 27: at + 27 + count]
            body = at + 27 + count
            starts.append(at)
            flags.append(flag)
            granules.append(granule)
            serials.append(serial)
            lacings.append(lacing)
            bodies.append(body)
            at = body + sum(lacing)
            ends.append(at)
        if len(set(serials)) != 1 or at != len(data):
            raise CannotJoin("libsndfile's Ogg file is not one whole stream")
        size = np.frombuffer(b"".join(lacings), np.uint8).astype(np.int64)
        counts = np.array([len(lacing) for lacing in lacings], np.int64)
        page = np.repeat(np.arange(len(lacings)), counts)
        within = np.cumsum(size) - size  # bytes before each segment, over all bodies
        page_first = np.cumsum(counts) - counts
        within -= np.repeat(within[np.minimum(page_first, len(size) - 1)], counts) \
            if len(size) else within
        segment_at = np.array(bodies, np.int64)[page] + within
        last = np.flatnonzero(size < 255)
        if not last.size:
            raise CannotJoin("libsndfile's Ogg file holds no packet")
        first = np.concatenate(([0], last[:-1] + 1))
        total = np.cumsum(size)
        packet_size = total[last] - total[first] + size[first]
        return cls(data, np.array(starts, np.int64), np.array(ends, np.int64),
                   np.array(flags, np.int64), np.array(granules, np.int64), serials[0],
                   segment_at, size, page, first, last, packet_size)

    def packet(self, index: int) -> bytes:
        segments = range(int(self.packet_first[index]), int(self.packet_last[index]) + 1)
        return b"".join(self.data[self.segment_at[s]: self.segment_at[s] + self.segment_size[s]]
                        for s in segments)

    def first_bytes(self) -> npt.NDArray[np.int64]:
        """Each packet's first byte (packets here are never empty)."""
        raw = np.frombuffer(self.data, np.uint8)
        return raw[self.segment_at[self.packet_first]].astype(np.int64)


_HEADERS = 3
"""Identification, comment and setup: the audio packets follow."""


@dataclass
class _Blocks:
    """A stream's audio packets as blocks: long or not, silent or not, and the sample
    each one's centre decodes to (the first block's centre is sample 0)."""

    long: npt.NDArray[np.bool_]
    silent: npt.NDArray[np.bool_]
    center: npt.NDArray[np.int64]
    quarter: tuple[int, int]
    """A quarter of a short and of a long block."""


def _blocks(stream: _Stream, samples: int) -> _Blocks:
    """Read and check the block sizes of a stream `samples` long (see the module's text)."""
    ident = stream.packet(0)
    if ident[:7] != b"\x01vorbis" or stream.packet_size.size <= _HEADERS + 1:
        raise CannotJoin("libsndfile's Ogg file is not the Vorbis stream expected")
    short, long = 1 << (ident[28] & 15), 1 << (ident[28] >> 4)
    first = stream.first_bytes()[_HEADERS:]
    if np.any(first & 1):
        raise CannotJoin("a Vorbis audio packet is marked as a header")
    is_long = (first >> 1 & 1).astype(bool)  # libvorbis's two modes: 0 short, 1 long
    quarter = np.where(is_long, long // 4, short // 4)
    center = np.concatenate(([0], np.cumsum(quarter[:-1] + quarter[1:])))
    # every page's granule position is the centre of the last block ending on it
    ends = stream.segment_page[stream.packet_last[_HEADERS:]]  # in order
    last_on_page = np.flatnonzero(np.r_[ends[1:] != ends[:-1], True])  # (np.unique imports numpy.ma)
    audio_pages = ends[last_on_page]
    expected = center[last_on_page]
    found = stream.granule[audio_pages]
    if not (np.array_equal(found[:-1], expected[:-1]) and found[-1] == samples
            and expected[-2] <= samples <= expected[-1]):
        raise CannotJoin("libvorbis's granule positions are not the block sums expected")
    # a long block's flags name its neighbours' sizes (they follow the mode number)
    inner = np.flatnonzero(is_long[1:-1]) + 1
    if not (np.array_equal(first[inner] >> 2 & 1, is_long[inner - 1])
            and np.array_equal(first[inner] >> 3 & 1, is_long[inner + 1])):
        raise CannotJoin("libvorbis's window flags are not where expected")
    return _Blocks(is_long, stream.packet_size[_HEADERS:] == 1, center,
                   (short // 4, long // 4))


def _long_packet(previous_long: bool, next_long: bool) -> bytes:
    """A silent long block: audio, mode 1, the window flags, no floor in any channel."""
    return bytes((0b10 | previous_long << 2 | next_long << 3,))


_SHORT_PACKET = b"\x00"
"""A silent short block: audio, mode 0, no floor in any channel."""


def _pages(packets: Sequence[tuple[bytes, int]], serial: int, sequence: int) -> list[bytes]:
    """Pages for (packet, granule position after it) in order, from `sequence` on: the
    first starts with a packet, the last ends with one; between, a packet may run over
    from one page to the next, and a page is closed as libogg closes one."""
    pages = []
    lacing = bytearray()
    body = bytearray()
    granule, flags = -1, 0
    for packet, after in packets:
        values = [255] * (len(packet) // 255) + [len(packet) % 255]
        at = 0
        for n, value in enumerate(values):
            lacing.append(value)
            body += packet[at: at + value]
            at += value
            ended = n == len(values) - 1
            if ended:
                granule = after
            if len(lacing) == 255 or (ended and len(body) >= _BODY_TARGET):
                pages.append(_page(flags, granule, serial, sequence, bytes(lacing), bytes(body)))
                sequence += 1
                lacing, body = bytearray(), bytearray()
                granule, flags = -1, 0 if ended else _CONTINUED
    if lacing:
        pages.append(_page(flags, granule, serial, sequence, bytes(lacing), bytes(body)))
    return pages


def join(first: BinaryIO, second: bytes, *, cut: int, total_samples: int) -> tuple[int, int]:
    """Join two encoders' Ogg Vorbis files into `first` (open for reading and writing):
    the first encoded samples [0, cut), the second [cut, total_samples), and the session
    is silent over [cut - GUARD, cut + GUARD). Returns the join, (X, Y): the samples
    before X are the first encoder's, those from Y on the second's, zeros between.
    CannotJoin, with `first` untouched, if the streams are not as expected."""
    first.seek(0)
    one = _Stream.parse(first.read())
    two = _Stream.parse(second)
    for header in (0, 2):  # identification and setup; the comments are the first's
        if one.packet(header) != two.packet(header):
            raise CannotJoin("the two Vorbis encoders wrote different headers")
    a, b = _blocks(one, cut), _blocks(two, total_samples - cut)
    short_q, long_q = a.quarter
    # the second encoder's first silent long block, and where its centre is in the session
    k = next((int(i) for i in np.flatnonzero(b.long & b.silent) if i > 0), None)
    if k is None or b.center[k] + 2 * long_q > GUARD:
        raise CannotJoin(f"the second Vorbis encoder made no silent block after {cut}")
    y = cut + int(b.center[k])
    # the first's last silent long block at least a long block before it, in the silence
    fits = np.flatnonzero(a.long & a.silent & (a.center <= y - 2 * long_q)
                          & (a.center >= cut - GUARD + 2 * long_q))
    if not fits.size:
        raise CannotJoin(f"the first Vorbis encoder made no silent block before {cut}")
    j = int(fits[-1])
    x = int(a.center[j])
    gap = y - x - 2 * long_q  # what the bridge's blocks must add up to
    longs, rest = divmod(gap, 2 * long_q)
    shorts, left = divmod(rest, 2 * short_q)
    if gap < 0 or left:
        raise CannotJoin(f"no blocks bridge {x} to {y}")
    kinds = [True] + [True] * longs + [False] * shorts + [True]  # long: j, bridge, k
    bridge = []
    at = x
    for n in range(1, len(kinds)):
        at += (long_q if kinds[n - 1] else short_q) + (long_q if kinds[n] else short_q)
        if n < len(kinds) - 1:
            bridge.append((_long_packet(kinds[n - 1], kinds[n + 1]) if kinds[n]
                           else _SHORT_PACKET, at))
    if at != y:
        raise CannotJoin(f"the bridge lands on {at}, not {y}")
    # pages kept as they are: the first's up to the last one ending with a packet before
    # j, the second's from the first one starting with a packet after k (moved on by cut)
    ends = one.segment_page[one.packet_last]
    page_ends = np.r_[ends[:-1] != one.segment_page[one.packet_first[1:]], True]
    keep = np.flatnonzero(page_ends[:_HEADERS + j])
    keep = keep[keep >= _HEADERS - 1]
    if not keep.size:
        raise CannotJoin("no page of the first Vorbis encoder ends before the join")
    last_kept = int(keep[-1])  # the last packet on the last page kept
    starts = two.segment_page[two.packet_first]
    page_starts = np.flatnonzero(np.r_[True, two.segment_page[two.packet_last[:-1]] != starts[1:]])
    later = page_starts[page_starts > _HEADERS + k]
    if not later.size:
        raise CannotJoin("no page of the second Vorbis encoder starts after the join")
    resume = int(later[0])  # the first packet of the second's pages kept
    packets = [(one.packet(i), int(a.center[i - _HEADERS]))
               for i in range(last_kept + 1, _HEADERS + j)]
    packets.append((_long_packet(bool(a.long[j - 1]), kinds[1]), x))
    packets += bridge
    packets.append((_long_packet(kinds[-2], bool(b.long[k + 1])), y))
    packets += [(two.packet(i), cut + int(b.center[i - _HEADERS]))
                for i in range(_HEADERS + k + 1, resume)]
    kept_pages = int(ends[last_kept]) + 1
    sequence = kept_pages
    out = _pages(packets, one.serial, sequence)
    sequence += len(out)
    for index in range(int(starts[resume]), len(two.page_start)):
        raw = bytearray(two.data[two.page_start[index]: two.page_end[index]])
        granule = int(two.granule[index])
        _HEADER.pack_into(raw, 0, b"OggS", 0, int(two.flags[index]),
                          granule + cut if granule != -1 else -1, one.serial, sequence, 0,
                          raw[26])
        raw[22:26] = crc(bytes(raw)).to_bytes(4, "little")
        out.append(bytes(raw))
        sequence += 1
    first.seek(int(one.page_end[kept_pages - 1]))
    for page in out:
        first.write(page)
    first.truncate()
    return x, y
