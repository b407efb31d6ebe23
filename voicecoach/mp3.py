"""MP3 through LAME (the lameenc binding) directly, with the gapless header LAME's own
front end writes.

Why not libsndfile's MP3 path: it fixes LAME's algorithm quality at its slowest useful
setting, and took 3.3 s for mid-back-knot's 9 minutes where lameenc at `-q 7` takes 0.7 s
(see scripts/lossy_settings.py for what the lower setting costs: nothing the checks or a
listener find). lameenc hands back frames only: it leaves out the Xing/LAME "Info" frame
that tells a decoder the encoder delay and padding, without which every decoder plays
1105 samples of silence first and the file is longer than the session. That one frame is
written here, to the layout of LAME's VbrTag.c (frame count, byte count, seek table,
delay and padding, tag CRC), and mpg123 (libsndfile's decoder), FFmpeg and mutagen read
it. Its music CRC is left 0: it is for checking tools, and no decoder reads it.

The session can also be cut, at long silences, into pieces that independent encoders
make at once (`encode_parts`): each encoder's delay and padding are taken out of the
silence before the cut, so the frames join end to end and decode to the very samples and
length of one encoder's (tests/test_mp3.py proves the join).
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = ["ENCODER_DELAY", "Mp3Settings", "SETTINGS", "Mp3Stream", "frame_samples"]


@dataclass(frozen=True)
class Mp3Settings:
    """LAME's settings: VBR quality (0 best, 9 smallest) and algorithm quality (0 slowest)."""

    vbr_quality: int
    algorithm_quality: int


SETTINGS = Mp3Settings(vbr_quality=8, algorithm_quality=7)
"""The lowest bitrate that passes every check of scripts/lossy_settings.py (mid-back-knot,
espeak-ng, 22050 Hz): V8 averages 23.4 kbps mono, 25.9 stereo, with every tone onset on
its sample, loudness within 0.05 LU of the WAV, peak under -0.5 dBFS and the spectrum kept
to 10 kHz; V9 (21.1 kbps) low-passes at 7.3 kHz, below the 8.2 kHz that holds 99.9% of the
session's energy. `-q 7` encodes about twice as fast as `-q 2` and passed the same."""

ENCODER_DELAY = 576
"""LAME's encoder delay, as its own Info frame states it (decoders add their 529)."""

_MPEG1_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_RATES = {  # sample rate: (version bits, rate index)
    44100: (3, 0), 48000: (3, 1), 32000: (3, 2),
    22050: (2, 0), 24000: (2, 1), 16000: (2, 2),
    11025: (0, 0), 12000: (0, 1), 8000: (0, 2),
}
_RATES_BY_VERSION = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_VBR_METHOD_MTRH = 4
_TAG_BYTES = 4 + 4 + 4 + 4 + 100 + 4 + 36
"""'Xing', flags, frames, bytes, seek table, quality, then LAME's 36-byte extension."""


def frame_samples(sample_rate: int) -> int:
    """Samples per frame: 1152 in MPEG-1, 576 in MPEG-2 and 2.5."""
    return 1152 if sample_rate >= 32000 else 576


def _side_info_bytes(sample_rate: int, channels: int) -> int:
    if sample_rate >= 32000:
        return 17 if channels == 1 else 32
    return 9 if channels == 1 else 17


def _frame_bytes(header: bytes) -> int:
    """A Layer III frame's length from its 4-byte header."""
    version = (header[1] >> 3) & 3
    kbps = (_MPEG1_KBPS if version == 3 else _MPEG2_KBPS)[header[2] >> 4]
    rate = _RATES_BY_VERSION[version][(header[2] >> 2) & 3]
    per_frame = 144000 if version == 3 else 72000
    return per_frame * kbps // rate + ((header[2] >> 1) & 1)


def _crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/ARC, as LAME computes its tag's CRC (190 bytes: no need for a table)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _info_frame_header(sample_rate: int, channels: int) -> tuple[bytes, int]:
    """The header of the smallest frame that holds the Info tag, and that frame's size."""
    version, rate_index = _RATES[sample_rate]
    table = _MPEG1_KBPS if version == 3 else _MPEG2_KBPS
    need = 4 + _side_info_bytes(sample_rate, channels) + _TAG_BYTES
    mode = 3 if channels == 1 else 1  # mono, or joint stereo as LAME writes it
    for index in range(1, len(table)):
        header = bytes((0xFF, 0xE0 | version << 3 | 1 << 1 | 1, index << 4 | rate_index << 2,
                        mode << 6))
        size = _frame_bytes(header)
        if size >= need:
            return header, size
    raise AssertionError("no bitrate holds the Info tag")  # every MPEG version has one


def info_frame(sample_rate: int, channels: int, *, frames: int, stream_bytes: int,
               frame_offsets: npt.NDArray[np.int64], padding: int,
               vbr_quality: int = SETTINGS.vbr_quality) -> bytes:
    """The Xing/LAME Info frame for `frames` audio frames after it, `stream_bytes` long
    with it, whose frames start at `frame_offsets` (counted from this frame's start)."""
    header, size = _info_frame_header(sample_rate, channels)
    if not 0 <= padding < 4096:
        raise ValueError(f"padding {padding} does not fit the tag's 12 bits")
    percent = np.minimum(np.arange(100) * frames // 100, max(frames - 1, 0))
    toc = np.minimum(frame_offsets[percent] * 256 // max(stream_bytes, 1), 255).astype(np.uint8) \
        if frames else np.zeros(100, np.uint8)
    frame = bytearray(size)
    frame[:4] = header
    at = 4 + _side_info_bytes(sample_rate, channels)
    xing = b"Xing" + struct.pack(">III", 0x0F, frames, stream_bytes) + toc.tobytes()
    xing += struct.pack(">I", 100 - 10 * vbr_quality)
    frame[at:at + len(xing)] = xing
    at += len(xing)
    lame = bytearray(36)
    lame[0:9] = b"LAME3.100"
    lame[9] = _VBR_METHOD_MTRH
    lame[21:24] = (ENCODER_DELAY << 12 | padding).to_bytes(3, "big")
    lame[28:32] = struct.pack(">I", stream_bytes)
    frame[at:at + 36] = lame
    assert len(frame) == size
    crc_at = at + 34
    frame[crc_at:crc_at + 2] = struct.pack(">H", _crc16(bytes(frame[:crc_at])))
    return bytes(frame)


class _FrameCounter:
    """Follows the frames going by, for the Info frame's count and seek table."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.total_bytes = 0
        self._next = 0  # where the next frame starts, counted over everything seen

    def extend(self, other: _FrameCounter) -> None:
        """Another encoder's frames, appended after these."""
        if self._next != self.total_bytes or other._next != other.total_bytes:
            raise AssertionError("an encoder's output ended inside a frame")
        self.offsets += [offset + self.total_bytes for offset in other.offsets]
        self.total_bytes += other.total_bytes
        self._next = self.total_bytes

    def feed(self, data: bytes) -> None:
        start = self.total_bytes
        self.total_bytes += len(data)
        sizes = _SIZES
        while self._next + 4 <= self.total_bytes:
            at = self._next - start
            if at < 0:
                raise AssertionError("a frame header straddles two encoder outputs")
            key = data[at + 1] << 8 | data[at + 2]  # the bytes a frame's length is read from
            if data[at] != 0xFF or key & 0xE000 != 0xE000:
                raise AssertionError(f"LAME's output lost frame sync at byte {self._next}")
            self.offsets.append(self._next)
            size = sizes.get(key)
            if size is None:
                size = sizes[key] = _frame_bytes(data[at:at + 4])
                if size < 4:
                    raise AssertionError(f"LAME wrote a frame without a length at {self._next}")
            self._next += size


_SIZES: dict[int, int] = {}
"""Frame lengths by the header's second and third bytes: a session's 20 000 frames come in
a few dozen kinds, each worked out once (a third of the time of working out each)."""


def _new_encoder(sample_rate: int, channels: int, settings: Mp3Settings) -> Any:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_out_sample_rate(sample_rate)
    encoder.set_channels(channels)
    encoder.set_vbr(4)  # vbr_mtrh, LAME's default VBR
    encoder.set_vbr_quality(settings.vbr_quality)
    encoder.set_quality(settings.algorithm_quality)
    encoder.silence()
    return encoder


class Mp3Stream:
    """Encode a stream of 16-bit samples to `out`, an open seekable binary file: a
    placeholder for the Info frame first, then the frames, then the Info frame over it."""

    def __init__(self, out: BinaryIO, sample_rate: int, channels: int,
                 settings: Mp3Settings = SETTINGS) -> None:
        if sample_rate not in _RATES:
            raise ValueError(f"MP3 has no {sample_rate} Hz; rates: {sorted(_RATES)}")
        self.out = out
        self.sample_rate = sample_rate
        self.channels = channels
        self.settings = settings
        self._counter = _FrameCounter()
        self._samples = 0
        self._encoder = _new_encoder(sample_rate, channels, settings)
        self._info_bytes = _info_frame_header(sample_rate, channels)[1]
        out.write(bytes(self._info_bytes))

    def _put(self, data: bytes | bytearray) -> None:
        if data:
            self._counter.feed(bytes(data))
            self.out.write(data)

    def write(self, pcm: npt.NDArray[np.int16]) -> None:
        """Mono int16 samples; duplicated for two channels."""
        self._samples += len(pcm)
        frames = pcm if self.channels == 1 else np.column_stack((pcm, pcm))
        self._put(self._encoder.encode(np.ascontiguousarray(frames).tobytes()))

    def write_frames(self, data: bytes, samples: int) -> None:
        """Frames another encoder made (see encode_parts), standing for `samples` samples."""
        self._samples += samples
        self._put(data)

    def close(self) -> None:
        """Flush the encoder and write the Info frame at the start."""
        self._put(self._encoder.flush())
        self.finish(self._samples)

    def finish(self, total_samples: int) -> None:
        frames = len(self._counter.offsets)
        padding = frames * frame_samples(self.sample_rate) - ENCODER_DELAY - total_samples
        offsets = np.asarray(self._counter.offsets, np.int64) + self._info_bytes
        info = info_frame(self.sample_rate, self.channels, frames=frames,
                          stream_bytes=self._counter.total_bytes + self._info_bytes,
                          frame_offsets=offsets, padding=padding,
                          vbr_quality=self.settings.vbr_quality)
        self.out.flush()
        self.out.seek(0)
        self.out.write(info)
        self.out.seek(0, 2)


SPLIT_LEAD = 1152
"""A LAME encoder given n samples at 22050 Hz makes ceil((n + 1152) / 576) frames
(measured for every n: tests/test_mp3.py): its delay of 576 and at least 576 of padding.
So a first part that ends SPLIT_LEAD samples before a cut on the frame grid fills frames
exactly up to the cut, and the second encoder's own delay starts there: those 1152
samples of the session must be silent, as the encoders' padding and delay are."""

SPLIT_GUARD = 4 * 576
"""Silence kept on each side of the cut's SPLIT_LEAD samples: a frame's transform reaches
a frame and a half around it, so the frames at the join carry nothing but silence."""

MIN_PART_SAMPLES = 30 * 22050
"""Shorter sessions take less time to encode than a second encoder takes to start."""


def find_cut(total_samples: int, silences: Sequence[tuple[int, int]],
             sample_rate: int) -> int | None:
    """Where to cut a session for two encoders: on the frame grid, nearest its middle,
    with silence over [cut - SPLIT_LEAD - SPLIT_GUARD, cut + SPLIT_GUARD); None if no
    silence is long enough, or the parts would be short."""
    frame = frame_samples(sample_rate)
    if frame != 576:
        return None  # SPLIT_LEAD is measured for MPEG-2's frames (22050 Hz sessions)
    from .parallel import cut_in_silence

    return cut_in_silence(total_samples, silences, grid=frame, before=SPLIT_LEAD + SPLIT_GUARD,
                          after=SPLIT_GUARD, min_part=MIN_PART_SAMPLES)


def encode_all(pcm_chunks: Iterable[npt.NDArray[np.int16]], out: BinaryIO, sample_rate: int,
               channels: int, on_chunk: Callable[[int], None] | None = None) -> None:
    """One encoder over the whole stream."""
    stream = Mp3Stream(out, sample_rate, channels)
    for pcm in pcm_chunks:
        stream.write(pcm)
        if on_chunk is not None:
            on_chunk(len(pcm))
    stream.close()


Read = Callable[[int, int], Iterable[npt.NDArray[np.int16]]]
"""16-bit samples from one sample to another, in chunks."""


def encode_split(read: Read, out: BinaryIO, *, total_samples: int, cut: int,
                 sample_rate: int, channels: int, spill_dir: Path,
                 on_chunk: Callable[[int], None] | None = None) -> None:
    """Two encoders at once, one on each side of `cut` (from find_cut): the second in a
    thread (LAME lets go of Python's lock), its frames kept in an unnamed file in
    `spill_dir` until the first is done, then appended. Decodes to total_samples exactly."""
    stream = Mp3Stream(out, sample_rate, channels)
    from .parallel import workers_deaf

    second = _Part(read, cut, total_samples, sample_rate, channels, spill_dir, on_chunk)
    with workers_deaf():
        second.start()
    try:
        first_end = cut - SPLIT_LEAD
        for pcm in read(0, cut):
            if second.error is not None:  # a full disk: stop now, not at the cut
                raise second.error
            kept = pcm[:max(0, first_end - stream._samples)]
            if kept.size < pcm.size and np.any(pcm[kept.size:]):
                raise AssertionError(f"the samples before the cut at {cut} are not silent")
            if kept.size:
                stream.write(kept)
            if on_chunk is not None:
                on_chunk(len(pcm))
        stream._put(stream._encoder.flush())
        if len(stream._counter.offsets) * frame_samples(sample_rate) != cut:
            raise AssertionError(f"the first encoder did not end on the cut at {cut}")
        second.join()
    except BaseException:  # a signal, a full disk: the second encoder stops too
        second.stopping.set()
        second.join()
        second.spill.close()
        raise
    second.append_to(stream)
    stream.finish(total_samples)


class _Part(threading.Thread):
    """The second encoder of encode_split, in its own thread."""

    def __init__(self, read: Read, start: int, end: int, sample_rate: int, channels: int,
                 spill_dir: Path, on_chunk: Callable[[int], None] | None) -> None:
        super().__init__(name="voicecoach-mp3", daemon=True)
        self.read, self.begin, self.end = read, start, end
        self.channels = channels
        self.encoder = _new_encoder(sample_rate, channels, SETTINGS)
        self.counter = _FrameCounter()
        self.spill = tempfile.TemporaryFile(dir=spill_dir)
        self.on_chunk = on_chunk
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for pcm in self.read(self.begin, self.end):
                if self.stopping.is_set():
                    return
                frames = pcm if self.channels == 1 else np.column_stack((pcm, pcm))
                self._put(self.encoder.encode(np.ascontiguousarray(frames).tobytes()))
                if self.on_chunk is not None:
                    self.on_chunk(len(pcm))
            self._put(self.encoder.flush())
        except BaseException as error:  # handed to the main thread
            self.error = error

    def _put(self, data: bytes | bytearray) -> None:
        if data:
            self.counter.feed(bytes(data))
            self.spill.write(data)

    def append_to(self, stream: Mp3Stream) -> None:
        try:
            if self.error is not None:
                raise self.error
            self.spill.seek(0)
            shutil.copyfileobj(self.spill, stream.out, 1 << 20)
            stream._counter.extend(self.counter)
        finally:
            self.spill.close()
