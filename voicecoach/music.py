"""The music bus: tracks under the voice, ducked from the timeline.

The timeline knows where every line and tone falls, so the music starts falling
DUCK_FALL_S before each one (by DUCK_DEPTH_DB) and rises DUCK_RISE_S after it; two
sounds closer than the two ramps share one dip, so the music never bobs up between
them. Ramps are raised cosines in dB, computed per sample: no steps, no zipper noise.

Tracks (a file, or a folder's sound files in name order, or shuffled by a seed) are
played one after the other, crossfaded (equal power, CROSSFADE_S), looped to fill the
session, faded in at its start and out at its end. Each track is levelled to the voice's
loudness plus `level_lu` over the whole track (its gated loudness, measured once: a
constant known before its first sample, so a session with music streams as one without),
so a folder of loud and quiet tracks sits at one level; and no higher than puts its peak
at MUSIC_PEAK, so the music alone never passes the ceiling, crossfades included.

Any sample of the bus is a pure function of its position, so play's jumps land on the
export's samples: a track is resampled (soxr, HQ) in fixed blocks of its own time, each
with a margin of context on both sides (measured: within 1e-6 of resampling the whole
track at once), and decoded in blocks, never whole, so memory stays flat whatever the
track's length. MP3 is decoded by miniaudio (dr_mp3): libsndfile 1.2.2, which soundfile
bundles, returns wrong samples for MP3 read in blocks smaller than the file (measured: 61
of 600 100 ms windows of a 60 s file off by more than 0.05 with 64 Ki-frame reads);
every other format by soundfile.

A track is measured (`measure`: decoded and K-weighted once, about 1 s for ten minutes of
MP3) when the bus first needs it, and the result kept in the cache folder's music/ (a
small JSON file keyed by the file's size, mtime and a hash of its first and last MiB,
checked when read back), so the next session with it starts at once. The bus grows with
the timeline (`lay`, `end`): the music at a sample depends only on the sounds near it
and on the session's end, so it is final LOOK_AHEAD_S before what is laid (render.py
waits for that). Under a sound, the music is DUCK_DEPTH_DB down, and `peak` bounds it
there from the tracks' measured peaks: render.py counts it with the sounds against the
ceiling. Music never enters the phrase cache.
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
from .loudness import (
    PEAK_CEILING_DBFS,
    SESSION_GAIN_DB,
    SPEECH_LUFS,
    LoudnessMeter,
    gated_loudness,
    step_samples,
)
from .schedule import Event
from .spec import MUSIC_LEVEL_LU

DUCK_DEPTH_DB = 18.0
"""How far the music falls under every line and tone (the issue asks for at least 15)."""
DUCK_FALL_S = 0.15
DUCK_RISE_S = 0.4
CROSSFADE_S = 3.0
FADE_IN_S = 2.0
FADE_OUT_S = 4.0
LOOK_AHEAD_S = max(FADE_OUT_S, DUCK_FALL_S + DUCK_RISE_S)
"""How far before what is laid the bus is final while the session is still being laid: a
sound laid later moves the ducking from DUCK_FALL_S + DUCK_RISE_S before it (its fall, or
the rise before it that a merge keeps down), and the fade-out from FADE_OUT_S before the
end, which is at or after what is laid."""
MUSIC_PEAK = 10 ** ((PEAK_CEILING_DBFS - SESSION_GAIN_DB) / 20) / math.sqrt(2)
"""The highest a levelled track may peak (-4.2 dBFS; -4.0 at the session's gain): two
tracks crossfading (a sine and a cosine) reach at most the root of the sum of their
peaks' squares, so the music alone stays under the ceiling wherever it plays."""
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


# -- a track's level: measured once over the whole track, kept in the cache --------------

MEASURE_RULE = 1
"""Stored with each measurement: a change to how a track is measured makes its old ones
misses."""
HASH_BYTES = 1 << 20
"""A track's identity hashes its first and last MiB (with its size and mtime): a file
replaced by another is measured again, without reading all of it to tell."""


@dataclass(frozen=True)
class Measure:
    """A track at the session's rate, its channels' mean, over the whole track: its gated
    loudness (LUFS, -inf for silence) and its peak."""

    loudness: float
    peak: float


def _identity(track: Track, rate: int) -> dict[str, Any]:
    import hashlib

    with open(track.path, "rb") as f:
        info = os.fstat(f.fileno())
        head = hashlib.sha256(f.read(HASH_BYTES)).hexdigest()
        f.seek(max(0, info.st_size - HASH_BYTES))
        tail = hashlib.sha256(f.read(HASH_BYTES)).hexdigest()
    return {"rule": MEASURE_RULE, "rate": rate, "size": info.st_size,
            "mtime_ns": info.st_mtime_ns, "head": head, "tail": tail}


def _stored(path: Path, identity: dict[str, Any]) -> Measure | None:
    """The measurement stored at `path` if it is whole, for this very file, and sane."""
    import json

    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("identity") != identity:
        return None
    loudness, peak = data.get("loudness"), data.get("peak")
    if not (loudness is None or (type(loudness) is float and math.isfinite(loudness))):
        return None
    if not (type(peak) is float and math.isfinite(peak) and peak >= 0.0):
        return None
    return Measure(-math.inf if loudness is None else loudness, peak)


def measure(track: Track, rate: int, store: Path | None = None) -> Measure:
    """The track's Measure, read from `store` (a folder) if it was measured before, else
    measured (decoded, resampled in the bus's own blocks, K-weighted: about 1 s for ten
    minutes of MP3) and stored there. The same file gives the same numbers either way
    (JSON keeps a float exactly)."""
    import hashlib
    import json

    from .cache import store_atomically
    from .errors import AudioError

    try:
        identity = _identity(track, rate)
    except OSError as e:
        raise AudioError(f"cannot decode music '{track.path}': {e.strerror or e}") from None
    path = None
    if store is not None:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        path = store / f"{key}.json"
        found = _stored(path, identity)
        if found is not None:
            return found
    resampled = _Resampled(track, rate)
    meter, peak = LoudnessMeter(rate), 0.0
    try:
        for k in range(-(-resampled.length // resampled.block_out)):
            block = resampled.block(k)[: resampled.length - k * resampled.block_out]
            meter.feed(block)
            peak = max(peak, float(np.max(np.abs(block))))
    finally:
        resampled.close()
    loudness = gated_loudness(meter.step_energies(), step_samples(rate))
    if path is not None:
        store_atomically(path, json.dumps({
            "identity": identity, "loudness": loudness if math.isfinite(loudness) else None,
            "peak": peak}, sort_keys=True).encode())
    return Measure(loudness, peak)


class MusicBus:
    """The music under a timeline that may still be growing: `lay` its sounds as they are
    laid, `end` it once its length is known; `samples(start, end)` (levelled, faded,
    ducked) of any stretch that is final (LOOK_AHEAD_S before what is laid, or all of it
    once ended); a bound on its peak anywhere, for the ceiling."""

    def __init__(self, tracks: Sequence[Track], rate: int, level_lu: float = MUSIC_LEVEL_LU,
                 store: Path | None = None) -> None:
        self.rate = rate
        self.tracks = tuple(tracks)
        self.level_lu = level_lu
        self.store = store
        """Where track measurements are kept (the cache's music/ folder); None: nowhere."""
        self._resampled = [_Resampled(t, rate) for t in self.tracks]
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self._open: OrderedDict[int, None] = OrderedDict()
        self._segments: list[_Segment] = []
        self._segment_starts: list[int] = []
        self._next = (0, 0, 0)  # the next segment's start, its index, its fade-in
        self._ahead = 0  # segments before this have their tracks measured (measure_until)
        self._ducks: list[tuple[int, int]] = []
        self._duck_starts: list[int] = []
        self._total: int | None = None
        self._measures: dict[int, Measure] = {}
        self._lock = threading.RLock()
        """The decoders, the block cache and the layout are shared state: an MP3 is made by
        two encoders at once (mp3.encode_split), each reading its half of the session, and
        a streamed session is laid while it plays."""
        self._measuring = threading.Lock()
        """One track measured at a time, with its own decoder (not under `_lock`, so the
        bus plays on while the next track is measured)."""

    # -- layout ---------------------------------------------------------------------------

    def _lay_out(self, until: int) -> None:
        """Every segment that starts before `until`: the tracks in turn, looped, each
        crossfaded into the next. Where they fall does not depend on the session's length."""
        rate, lengths = self.rate, [r.length for r in self._resampled]
        crossfade = round(CROSSFADE_S * rate)
        start, i, fade_in = self._next
        while start < until:
            t = i % len(lengths)
            nxt = (i + 1) % len(lengths)
            fade_out = min(crossfade, lengths[t] // 2, lengths[nxt] // 2)
            self._segments.append(_Segment(t, start, lengths[t], fade_in, fade_out))
            self._segment_starts.append(start)
            start += lengths[t] - fade_out
            fade_in = fade_out
            i += 1
        self._next = (start, i, fade_in)

    @property
    def segments(self) -> tuple[_Segment, ...]:
        """The plays of tracks in the session (so far, while its length is not known)."""
        with self._lock:
            if self._total is None:
                return tuple(self._segments)
            self._lay_out(self._total)
            return tuple(s for s in self._segments if s.start < self._total)

    @property
    def total_samples(self) -> int:
        assert self._total is not None, "the session's length is not known yet"
        return self._total

    def lay(self, events: Sequence[Event]) -> None:
        """Add sounds to the ducking (sorted by start, none before those laid): each
        stretch at full depth is a sound, with sounds closer than the two ramps merged.
        A sound laid later can change the ducking only from LOOK_AHEAD_S before its start."""
        fall, rise = round(DUCK_FALL_S * self.rate), round(DUCK_RISE_S * self.rate)
        with self._lock:
            for event in events:
                if self._ducks and event.start - fall <= self._ducks[-1][1] + rise:
                    a, b = self._ducks[-1]
                    self._ducks[-1] = (a, max(b, event.end))
                else:
                    self._ducks.append((event.start, event.end))
                    self._duck_starts.append(event.start)

    def end(self, total: int) -> None:
        """The session's length is known: the fade-out goes before it."""
        with self._lock:
            self._total = total

    # -- gains (a function of position only) ----------------------------------------------

    def duck_gain(self, start: int, end: int) -> np.ndarray:
        """The ducking's linear gain over [start, end): DUCK_DEPTH_DB down across each
        region, raised-cosine ramps in dB into and out of it."""
        with self._lock:
            return self._duck_gain(start, end)

    def _duck_gain(self, start: int, end: int) -> np.ndarray:
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
        """The session's fade-in, and once its length is known its fade-out, over [start, end)."""
        gain = np.ones(end - start)
        fade_in, fade_out = round(FADE_IN_S * self.rate), round(FADE_OUT_S * self.rate)
        _shape(gain, start, 0, fade_in, rising=True, into=True)
        if self._total is not None:
            end_at = self._total
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

    def _overlapping(self, start: int, end: int) -> list[_Segment]:
        self._lay_out(end)
        i = max(0, bisect.bisect_right(self._segment_starts, start) - 1)
        while i > 0 and self._segments[i - 1].end > start:
            i -= 1
        found = []
        for seg in self._segments[i:]:
            if seg.start >= end:
                break
            if seg.end > start:
                found.append(seg)
        return found

    def samples(self, start: int, end: int) -> np.ndarray:
        """The bus over [start, end): levelled, crossfaded, faded and ducked; float32.
        Safe to call from several threads (one at a time inside). The caller asks only
        for what is final (render.Rendering)."""
        with self._lock:
            return self._samples(start, end)

    def _samples(self, start: int, end: int) -> np.ndarray:
        if self._total is not None:
            end = min(end, self._total)
        out = np.zeros(max(0, end - start), np.float32)
        if end <= start:
            return out
        for seg in self._overlapping(start, end):
            a, b = max(start, seg.start), min(end, seg.end)
            out[a - start: b - start] += self.gain(seg.track) * self._segment_samples(seg, a, b)
        out *= (self._fades(start, end) * self._duck_gain(start, end)).astype(np.float32)
        return out

    # -- level and peak -------------------------------------------------------------------

    def measured(self, t: int) -> Measure:
        """Track t's Measure (measured on first use, or read from the store)."""
        found = self._measures.get(t)
        if found is None:
            with self._measuring:
                found = self._measures.get(t)
                if found is None:
                    found = measure(self.tracks[t], self.rate, self.store)
                    self._measures[t] = found
        return found

    def gain(self, t: int) -> float:
        """Track t's gain: to the voice's loudness plus `level_lu` over the whole track,
        but its peak no higher than MUSIC_PEAK."""
        m = self.measured(t)
        target = SPEECH_LUFS + self.level_lu
        gain = 10 ** ((target - m.loudness) / 20) if math.isfinite(m.loudness) else 0.0
        return min(gain, MUSIC_PEAK / m.peak) if m.peak > 0 else gain

    def measure_until(self, until: int) -> None:
        """Measure now (not when they are mixed) the tracks that play before `until`:
        render.py calls this as the timeline is laid, ahead of playback."""
        with self._lock:
            self._lay_out(until)
            first = self._ahead
            while self._ahead < len(self._segments) and self._segments[self._ahead].start < until:
                self._ahead += 1
            tracks = dict.fromkeys(s.track for s in self._segments[first: self._ahead])
        for t in tracks:
            self.measured(t)

    @property
    def gains(self) -> list[float]:
        """Every track's gain (each measured, or read from the store)."""
        return [self.gain(t) for t in range(len(self.tracks))]

    def peak(self, start: int, end: int) -> float:
        """A bound on the bus's peak over [start, end): each track's levelled peak, two
        crossfading together at most the root of the sum of their squares (a sine and a
        cosine), at full depth if [start, end) lies inside one ducked stretch."""
        with self._lock:
            segments = self._overlapping(start, end)
            i = bisect.bisect_right(self._duck_starts, start) - 1
            ducked = i >= 0 and self._ducks[i][0] <= start and end <= self._ducks[i][1]
        peaks = [self.gain(s.track) * self.measured(s.track).peak for s in segments]
        bound = max(peaks, default=0.0)
        for i in range(len(segments) - 1):
            s, nxt = segments[i], segments[i + 1]
            if max(nxt.start, start) < min(s.end, end):  # their crossfade is in the stretch
                bound = max(bound, math.hypot(peaks[i], peaks[i + 1]))
        return bound * 10 ** (-DUCK_DEPTH_DB / 20) if ducked else bound

    def step_energies(self, steps: int) -> np.ndarray:
        """The bus's K-weighted energy in each of the session's first `steps` 100 ms
        steps: one pass over it (for measuring a session, not before playing it)."""
        step = step_samples(self.rate)
        meter = LoudnessMeter(self.rate)
        total = min(self.total_samples, steps * step)
        for a in range(0, total, 64 * step):
            meter.feed(self.samples(a, min(a + 64 * step, total)))
        energies = np.asarray(meter.step_energies(), dtype=np.float64)[:steps]
        return np.pad(energies, (0, steps - energies.shape[0]))
