"""The music bus: tracks under the voice, ducked from the timeline.

The timeline knows where every line and tone falls, so the music starts falling
DUCK_FALL_S before each one (by DUCK_DEPTH_DB) and rises DUCK_RISE_S after it; two
sounds closer than the two ramps share one dip, so the music never bobs up between
them. Ramps are raised cosines in dB, computed per sample: no steps, no zipper noise.

Tracks (a file, or a folder's sound files in name order, or shuffled by a seed) are
played one after the other, crossfaded (equal power, CROSSFADE_S), looped to fill the
session, faded in at its start and out at its end. Each track is levelled to the voice's
loudness plus `level_lu` over the part of it that plays, so a folder of loud and quiet
tracks sits at one level.

Any sample of the bus is a pure function of its position, so play's jumps land on the
export's samples: a track is resampled (soxr, HQ) in fixed blocks of its own time, each
with a margin of context on both sides (measured: within 1e-6 of resampling the whole
track at once), and decoded in blocks, never whole, so memory stays flat whatever the
track's length. MP3 is decoded by miniaudio (dr_mp3): libsndfile 1.2.2, which soundfile
bundles, returns wrong samples for MP3 read in blocks smaller than the file (measured: 61
of 600 100 ms windows of a 60 s file off by more than 0.05 with 64 Ki-frame reads);
every other format by soundfile.

The session's gain needs the bus's loudness: `step_energies` runs the bus once through
the K-weighting (in blocks) before the first sample is mixed; the rendered mix then
reads it again. Music never goes near the phrase cache.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .loudness import SPEECH_LUFS, LoudnessMeter, gated_loudness, step_samples
from .schedule import Timeline
from .spec import MUSIC_LEVEL_LU

DUCK_DEPTH_DB = 18.0
"""How far the music falls under every line and tone (the issue asks for at least 15)."""
DUCK_FALL_S = 0.15
DUCK_RISE_S = 0.4
CROSSFADE_S = 3.0
FADE_IN_S = 2.0
FADE_OUT_S = 4.0
RATES_HZ = (8000, 192000)
MIN_TRACK_S = 2.0
"""Shorter than this is a sound, not music to loop: crossfades would eat it."""
MAX_TRACK_S = 3 * 3600.0
"""Longer than any session people play; past it a file is more likely a recording left
running or an audiobook, and its length alone would be minutes of decoding."""
MAX_CHANNELS = 8
CACHE_SAMPLES = 4 * 1024 * 1024
"""Resampled blocks kept (16 MiB): a short track looped is decoded once, a long one
streams through."""
OPEN_TRACKS = 3
"""Tracks whose files are kept open: the two of a crossfade, and one more."""
PEAK_BLOCKS_PER_STEP = 5
"""The bus's peak is kept per 20 ms, so a line's bound counts the music ducked under it,
not the music just before its fall."""
MAX_TRACKS = 10_000
SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".opus")
"""What a folder's files must end with to be played; other files there (covers, notes)
are left alone."""


@dataclass(frozen=True)
class Track:
    """One sound file that checked out: where, its rate and length in its own frames."""

    path: str
    rate_hz: int
    frames: int
    mp3: bool


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _track(path: Path, label: str) -> Track:
    import soundfile

    name = str(path)
    try:
        info = soundfile.info(name)
    except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError):
        raise UsageError(f"{label}'{name}': not a sound file soundfile can read (WAV, FLAC, OGG, "
                         "MP3...)") from None
    low, high = RATES_HZ
    if not low <= info.samplerate <= high:
        raise UsageError(f"{label}'{name}': its sample rate is {info.samplerate} Hz; expected "
                         f"{low} to {high} Hz")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise UsageError(f"{label}'{name}': it has {info.channels} channels; expected 1 to "
                         f"{MAX_CHANNELS}")
    seconds = info.frames / info.samplerate
    if seconds < MIN_TRACK_S:
        raise UsageError(f"{label}'{name}': it lasts {seconds:.1f} s; a track must last at "
                         f"least {MIN_TRACK_S:g} s")
    if seconds > MAX_TRACK_S:
        raise UsageError(f"{label}'{name}': it lasts {_clock(seconds)}; a track may last at "
                         f"most {_clock(MAX_TRACK_S)}")
    return Track(name, int(info.samplerate), int(info.frames), info.format == "MP3")


def find_tracks(path: Path, *, shuffle: bool = False, seed: int = 0,
                label: str = "--music ") -> tuple[Track, ...]:
    """The tracks at `path` (a file, or a folder's sound files in name order), each
    checked from its header before anything is made: a missing path, a file that is not
    sound, a folder with none, a rate or length out of range is a UsageError naming it.
    `shuffle` orders them by `seed`: the same seed, the same order (and the same bytes)."""
    name = str(path)
    if "\0" in name:
        raise UsageError(f"{label}{name!r}: the name holds a NUL character")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"{label}'{name}': no such file or folder") from None
    except OSError as e:
        raise UsageError(f"{label}'{name}': {e.strerror or e}") from None
    except ValueError:  # a name the file system cannot hold (a lone surrogate)
        raise UsageError(f"{label}{name!r}: not a name a file can have") from None
    if stat.S_ISDIR(mode):
        try:
            files = sorted((p for p in path.iterdir()
                            if p.suffix.lower() in SOUND_EXTENSIONS and p.is_file()),
                           key=lambda p: (p.name.casefold(), p.name))
        except OSError as e:
            raise UsageError(f"{label}'{name}': {e.strerror or e}") from None
        if not files:
            raise UsageError(f"{label}'{name}': the folder holds no sound files (names ending "
                             f"{', '.join(SOUND_EXTENSIONS)})")
        if len(files) > MAX_TRACKS:
            raise UsageError(f"{label}'{name}': the folder holds {len(files):,} sound files; "
                             f"at most {MAX_TRACKS:,}")
    elif stat.S_ISREG(mode):
        files = [path]
    else:
        raise UsageError(f"{label}'{name}': not a regular file or a folder (a device, FIFO or "
                         "socket)")
    if shuffle:
        random.Random(seed).shuffle(files)
    return tuple(_track(f, label) for f in files)


def _mono(block: np.ndarray) -> np.ndarray:
    """The channels' mean (summed column by column: numpy's mean across a row of two is
    five times slower)."""
    out = np.array(block[:, 0])
    for c in range(1, block.shape[1]):
        out += block[:, c]
    if block.shape[1] > 1:
        out *= np.float32(1 / block.shape[1])
    return out


class _Decoder:
    """A track's samples as float32 mono, read in blocks from any frame; reading on from
    where the last read ended costs no seek."""

    READ_FRAMES = 65536

    def __init__(self, track: Track) -> None:
        self.track = track
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0
        self._source: Iterator[np.ndarray] | None = None
        self._file: object = None

    def close(self) -> None:
        """Let go of the file and what was read of it (reading again reopens it)."""
        file, self._file, self._source = self._file, None, None
        self._buffer = np.zeros(0, np.float32)
        if file is not None:
            file.close()  # type: ignore[attr-defined]

    def _open_at(self, frame: int) -> None:
        self.close()
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = frame
        if self.track.mp3:
            import importlib

            miniaudio: Any = importlib.import_module("miniaudio")  # untyped
            stream = miniaudio.stream_file(self.track.path, miniaudio.SampleFormat.FLOAT32, 1,
                                           self.track.rate_hz, self.READ_FRAMES,
                                           seek_frame=frame)
            self._source = (np.frombuffer(block, np.float32) for block in stream)
        else:
            import soundfile

            file = soundfile.SoundFile(self.track.path)
            file.seek(frame)
            self._file = file
            self._source = (_mono(block) for block in file.blocks(
                self.READ_FRAMES, dtype="float32", always_2d=True))

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames [start, start + count), zeros past the end."""
        from .errors import AudioError

        end = min(start + count, self.track.frames)
        out = np.zeros(count, np.float32)
        if start >= end:
            return out
        buffered_end = self._buffer_start + self._buffer.shape[0]
        try:
            if not self._buffer_start <= start <= buffered_end or self._source is None:
                self._open_at(start)
            pieces = [self._buffer[start - self._buffer_start:]]
            have = pieces[0].shape[0]
            while have < end - start:
                assert self._source is not None
                block = next(self._source, None)
                if block is None or block.shape[0] == 0:
                    break
                pieces.append(block)
                have += block.shape[0]
        except Exception as e:  # a file damaged past its header, or gone since it was checked
            raise AudioError(f"cannot decode music '{self.track.path}': {e}") from None
        got = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        n = min(got.shape[0], end - start)
        out[:n] = got[:n]
        self._buffer, self._buffer_start = got, start  # keep what was read, for the next read
        return out


class _Resampled:
    """A track at the session's rate, in fixed blocks, so each output sample is the same
    whichever block boundary a reader starts from."""

    MARGIN_UNITS_MIN_FRAMES = 2048
    TARGET_BLOCK = 32768

    def __init__(self, track: Track, rate: int) -> None:
        self.track = track
        self.rate = rate
        g = gcd(track.rate_hz, rate)
        self._in_unit, self._out_unit = track.rate_hz // g, rate // g
        units = max(1, self.TARGET_BLOCK // self._out_unit)
        self.block_out = units * self._out_unit
        self.block_in = units * self._in_unit
        self._margin_units = -(-self.MARGIN_UNITS_MIN_FRAMES // self._in_unit)
        self.length = track.frames * rate // track.rate_hz
        self._decoder = _Decoder(track)

    def block(self, k: int) -> np.ndarray:
        if self.track.rate_hz == self.rate:
            return self._decoder.read(k * self.block_in, self.block_in)
        import soxr  # type: ignore[import-untyped]  # (no type hints shipped)

        margin_in = self._margin_units * self._in_unit
        start = k * self.block_in - margin_in
        lo = max(0, start)
        window = self._decoder.read(lo, k * self.block_in + self.block_in + margin_in - lo)
        out = soxr.resample(window, self.track.rate_hz, self.rate, quality="HQ")
        skip = (k * self.block_in - lo) // self._in_unit * self._out_unit
        block: np.ndarray = np.asarray(out[skip: skip + self.block_out], dtype=np.float32)
        if block.shape[0] < self.block_out:
            block = np.pad(block, (0, self.block_out - block.shape[0]))
        return block

    def close(self) -> None:
        self._decoder.close()


@dataclass(frozen=True)
class _Segment:
    """One play of a track: where it starts on the bus, its length, its crossfades."""

    track: int
    start: int
    length: int
    fade_in: int
    fade_out: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _ramp(u: np.ndarray) -> np.ndarray:
    """0 to 1 as a raised cosine: smooth at both ends."""
    return np.asarray(0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0)))


def _shape(out: np.ndarray, start: int, a: int, b: int, *, rising: bool,
           into: bool = False) -> None:
    """Over [a, b) (clipped to out's [start, start + len)), a ramp from 0 to 1 (`rising`)
    or from 1 to 0: the larger of it and what is there, or (`into`) multiplied in."""
    lo, hi = max(a, start), min(b, start + out.shape[0])
    if hi <= lo:
        return
    u = (np.arange(lo, hi) - a) / (b - a)
    ramp = _ramp(u) if rising else 1.0 - _ramp(u)
    piece = out[lo - start: hi - start]
    if into:
        piece *= ramp
    else:
        np.maximum(piece, ramp, out=piece)


class MusicBus:
    """The music under a timeline: `samples(start, end)` (levelled, faded, ducked), and
    its loudness per 100 ms step and peak bound, for the session's one gain."""

    def __init__(self, tracks: Sequence[Track], timeline: Timeline,
                 level_lu: float = MUSIC_LEVEL_LU) -> None:
        self.rate = rate = timeline.sample_rate
        self.total_samples = timeline.duration_samples
        self.tracks = tuple(tracks)
        self.level_lu = level_lu
        self._resampled = [_Resampled(t, rate) for t in self.tracks]
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self._open: OrderedDict[int, None] = OrderedDict()
        self.segments = self._lay_out()
        self._segment_starts = [s.start for s in self.segments]
        self._ducks = self._duck_regions(timeline)
        self._duck_starts = [a for a, _ in self._ducks]
        self._gains: list[float] | None = None
        self._steps: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.RLock()
        """The decoders and the block cache are shared state, and an MP3 is made by two
        encoders at once (mp3.encode_split), each reading its half of the session."""

    # -- layout ---------------------------------------------------------------------------

    def _lay_out(self) -> tuple[_Segment, ...]:
        rate, lengths = self.rate, [r.length for r in self._resampled]
        crossfade = round(CROSSFADE_S * rate)
        segments: list[_Segment] = []
        start, i, fade_in = 0, 0, 0
        while start < self.total_samples:
            t = i % len(lengths)
            nxt = (i + 1) % len(lengths)
            fade_out = min(crossfade, lengths[t] // 2, lengths[nxt] // 2)
            segments.append(_Segment(t, start, lengths[t], fade_in, fade_out))
            start += lengths[t] - fade_out
            fade_in = fade_out
            i += 1
        return tuple(segments)

    def _duck_regions(self, timeline: Timeline) -> list[tuple[int, int]]:
        """[start, end) of each stretch at full depth: every sound, with sounds closer than
        the two ramps merged."""
        fall, rise = round(DUCK_FALL_S * self.rate), round(DUCK_RISE_S * self.rate)
        regions: list[list[int]] = []
        for event in sorted(timeline.events, key=lambda e: e.start):
            if regions and event.start - fall <= regions[-1][1] + rise:
                regions[-1][1] = max(regions[-1][1], event.end)
            else:
                regions.append([event.start, event.end])
        return [(a, b) for a, b in regions]

    # -- gains (a function of position only) ----------------------------------------------

    def duck_gain(self, start: int, end: int) -> np.ndarray:
        """The ducking's linear gain over [start, end): DUCK_DEPTH_DB down across each
        region, raised-cosine ramps in dB into and out of it."""
        fall, rise = round(DUCK_FALL_S * self.rate), round(DUCK_RISE_S * self.rate)
        gain = np.ones(end - start)
        first = max(0, bisect.bisect_right(self._duck_starts, start + fall) - 1)
        while first > 0 and self._ducks[first - 1][1] + rise > start:
            first -= 1
        floor = 10 ** (-DUCK_DEPTH_DB / 20)
        for a, b in self._ducks[first:]:
            if a - fall >= end:
                break
            if b + rise <= start:
                continue
            for lo, hi, rising in ((a - fall, a, True), (b, b + rise, False)):
                depth = np.zeros(max(0, min(hi, end) - max(lo, start)))
                if depth.size:
                    _shape(depth, max(lo, start), lo, hi, rising=rising)
                    piece = gain[max(lo, start) - start: min(hi, end) - start]
                    np.minimum(piece, 10 ** (-DUCK_DEPTH_DB / 20 * depth), out=piece)
            gain[max(a, start) - start: max(min(b, end), start) - start] = floor
        return gain

    def _fades(self, start: int, end: int) -> np.ndarray:
        """The session's fade-in and fade-out over [start, end)."""
        gain = np.ones(end - start)
        fade_in, fade_out = round(FADE_IN_S * self.rate), round(FADE_OUT_S * self.rate)
        _shape(gain, start, 0, fade_in, rising=True, into=True)
        end_at = self.total_samples
        _shape(gain, start, end_at - fade_out, end_at, rising=False, into=True)
        return gain

    # -- samples --------------------------------------------------------------------------

    def _track_samples(self, t: int, start: int, end: int) -> np.ndarray:
        """Track t's own samples [start, end) at the session's rate."""
        r = self._resampled[t]
        out = np.zeros(end - start, np.float32)
        end = min(end, r.length)
        for k in range(start // r.block_out, -(-end // r.block_out) if end > start else 0):
            key = (t, k)
            block = self._cache.get(key)
            if block is None:
                self._reading(t)
                block = r.block(k)
                self._cache[key] = block
                self._cached += block.shape[0]
                while self._cached > CACHE_SAMPLES and len(self._cache) > 2:
                    self._cached -= self._cache.popitem(last=False)[1].shape[0]
            else:
                self._cache.move_to_end(key)
            a, b = max(start, k * r.block_out), min(end, (k + 1) * r.block_out)
            out[a - start: b - start] = block[a - k * r.block_out: b - k * r.block_out]
        return out

    def _reading(self, t: int) -> None:
        """Track t is being read: the files of all but the last few tracks read are closed,
        so a folder of thousands holds a few files open, and a few buffers."""
        self._open.pop(t, None)
        self._open[t] = None
        while len(self._open) > OPEN_TRACKS:
            self._resampled[self._open.popitem(last=False)[0]].close()

    def _segment_samples(self, seg: _Segment, start: int, end: int) -> np.ndarray:
        """One segment's unlevelled samples over the bus's [start, end) (inside it), with
        its crossfades (equal power: sine in, cosine out)."""
        x = self._track_samples(seg.track, start - seg.start, end - seg.start)
        if seg.fade_in and start < seg.start + seg.fade_in:
            n = min(end, seg.start + seg.fade_in) - start
            u = np.arange(start - seg.start, start - seg.start + n) / seg.fade_in
            x[:n] *= np.sin(0.5 * np.pi * u).astype(np.float32)
        if seg.fade_out and end > seg.end - seg.fade_out:
            lo = max(start, seg.end - seg.fade_out)
            u = (seg.end - np.arange(lo, end)) / seg.fade_out
            x[lo - start:] *= np.sin(0.5 * np.pi * u).astype(np.float32)
        return x

    def _overlapping(self, start: int, end: int) -> Iterator[_Segment]:
        i = max(0, bisect.bisect_right(self._segment_starts, start) - 1)
        while i > 0 and self.segments[i - 1].end > start:
            i -= 1
        for seg in self.segments[i:]:
            if seg.start >= end:
                break
            if seg.end > start:
                yield seg

    def samples(self, start: int, end: int) -> np.ndarray:
        """The bus over [start, end): levelled, crossfaded, faded and ducked; float32.
        Safe to call from several threads (one at a time inside)."""
        with self._lock:
            return self._samples(start, end)

    def _samples(self, start: int, end: int) -> np.ndarray:
        end = min(end, self.total_samples)
        out = np.zeros(max(0, end - start), np.float32)
        if end <= start:
            return out
        gains = self.gains
        for seg in self._overlapping(start, end):
            a, b = max(start, seg.start), min(end, seg.end)
            out[a - start: b - start] += gains[seg.track] * self._segment_samples(seg, a, b)
        out *= (self._fades(start, end) * self.duck_gain(start, end)).astype(np.float32)
        return out

    # -- loudness -------------------------------------------------------------------------

    @property
    def gains(self) -> list[float]:
        """Each track's gain to the voice's loudness plus `level_lu`."""
        with self._lock:
            if self._gains is None:
                self._measure()
            assert self._gains is not None
            return self._gains

    def _measure(self) -> None:
        """One pass over the bus: each track's loudness over what plays of it, and the
        K-weighted energy and peak per session step of each segment as it sounds (faded,
        crossfaded, ducked), to be added up once the tracks' gains are known."""
        step = step_samples(self.rate)
        steps = self.total_samples // step
        fine = step // PEAK_BLOCKS_PER_STEP
        own: list[list[np.ndarray]] = [[] for _ in self.tracks]
        placed: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        block = 64 * step
        measured: set[int] = set()
        for seg in self.segments:
            end = min(seg.end, self.total_samples)
            # a track's loudness is taken over its first play; a later one repeats it
            measure_raw = seg.track not in measured
            measured.add(seg.track)
            first_step = seg.start // step
            raw_meter, heard_meter = LoudnessMeter(self.rate), LoudnessMeter(self.rate)
            lead = seg.start - first_step * step
            raw_meter.feed(np.zeros(lead, np.float32))
            heard_meter.feed(np.zeros(lead, np.float32))
            peaks: list[np.ndarray] = []
            pending = np.zeros(lead, np.float32)  # peaks in blocks of `fine` from first_step
            for a in range(seg.start, end, block):
                b = min(a + block, end)
                x = self._segment_samples(seg, a, b)
                if measure_raw:
                    raw_meter.feed(self._track_samples(seg.track, a - seg.start, b - seg.start))
                heard = x * (self._fades(a, b) * self.duck_gain(a, b)).astype(np.float32)
                heard_meter.feed(heard)
                pending = np.concatenate([pending, np.abs(heard)])
                whole = pending.shape[0] // fine * fine
                peaks.append(pending[:whole].reshape(-1, fine).max(axis=1))
                pending = pending[whole:]
            heard_meter.feed(np.zeros(-(pending.shape[0]) % step, np.float32))
            if pending.shape[0]:
                peaks.append(np.array([pending.max()]))
            if measure_raw:
                own[seg.track].append(raw_meter.step_energies())
            placed.append((seg.track, first_step, heard_meter.step_energies(),
                           np.concatenate(peaks) if peaks else np.zeros(0)))
        blocks = (steps + 1) * PEAK_BLOCKS_PER_STEP
        target = SPEECH_LUFS + self.level_lu
        gains = []
        for parts in own:
            loudness = gated_loudness(np.concatenate(parts), step) if parts else -math.inf
            gains.append(10 ** ((target - loudness) / 20) if math.isfinite(loudness) else 0.0)
        step_energies, block_peaks = np.zeros(steps + 1), np.zeros(blocks)
        for t, first, energies, peaks_ in placed:
            n = max(0, min(energies.shape[0], steps + 1 - first))
            step_energies[first: first + n] += gains[t] ** 2 * energies[:n]
            first *= PEAK_BLOCKS_PER_STEP
            n = max(0, min(peaks_.shape[0], blocks - first))
            block_peaks[first: first + n] += gains[t] * peaks_[:n]
        self._gains = gains
        self._steps = (step_energies, block_peaks)

    def step_energies(self, steps: int) -> np.ndarray:
        """The bus's K-weighted energy in each of the session's first `steps` 100 ms steps."""
        with self._lock:
            if self._steps is None:
                self._measure()
        assert self._steps is not None
        return self._steps[0][:steps]

    def peak(self, start: int, end: int) -> float:
        """A bound on the bus's peak over [start, end)."""
        with self._lock:
            if self._steps is None:
                self._measure()
        assert self._steps is not None
        fine = step_samples(self.rate) // PEAK_BLOCKS_PER_STEP
        peaks = self._steps[1]
        lo, hi = start // fine, min(peaks.shape[0], -(-end // fine))
        return float(peaks[lo:hi].max()) if hi > lo else 0.0
