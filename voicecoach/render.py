"""Render a timeline to one stream of PCM chunks: speech and tones mixed, levelled.

Memory stays flat however long the session: chunks are mixed one at a time from the
phrase cache (memory-mapped) and the tone bank. Loudness is measured in a first pass
over the same chunks (BS.1770 K-weighting with pyloudnorm's filters, gated in blocks
of 400 ms), then one gain brings the session to the spoken-word target with peaks
kept at or below -1 dBFS. Play and export both read `Rendering.chunks`, so what is
heard and what is written are the same samples.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path

import numpy as np

from .schedule import Timeline
from .speech import PhraseCache, store_atomically

TARGET_LUFS_MONO = -19.0
"""Spoken word, mono; the same audio in two channels measures 3 LU louder: -16 LUFS."""
PEAK_CEILING_DBFS = -1.0
CHUNK_SAMPLES = 22050
DENORMAL = 1e-30


class ToneBank:
    """Tone samples by kind: the routine's own WAV where it names one, else the shipped one."""

    def __init__(self, sounds: dict[str, str] | None = None, base_dir: Path | None = None) -> None:
        from . import tones

        self._tones: dict[str, np.ndarray] = {}
        digest = hashlib.sha256()
        for kind in tones.TONE_KINDS:
            own = (sounds or {}).get(kind)
            if own:
                path = Path(own) if base_dir is None else base_dir / own
                self._tones[kind] = tones.load_wav(path)
            else:
                self._tones[kind] = tones.bundled(kind)
            digest.update(kind.encode() + np.ascontiguousarray(self._tones[kind]).tobytes())
        self.fingerprint = digest.hexdigest()
        """Changes whenever any tone's samples do: part of the cached gain's key."""

    def __getitem__(self, kind: str) -> np.ndarray:
        return self._tones[kind]

    def length(self, kind: str) -> int:
        return int(self._tones[kind].shape[0])


class Rendering:
    """A timeline's audio, produced on demand in chunks from any sample position."""

    def __init__(self, timeline: Timeline, speech: PhraseCache, tones: ToneBank,
                 chunk_samples: int = CHUNK_SAMPLES, gain_cache: Path | None = None) -> None:
        self.timeline = timeline
        self.gain_cache = gain_cache
        self.speech = speech
        self.tones = tones
        self.chunk_samples = chunk_samples
        self.total_samples = timeline.duration
        events = timeline.events
        self._starts = [e.start for e in events]
        self._max_ends = list(accumulate((e.end for e in events), max))
        self._gain: float | None = None
        self._phrase = functools.lru_cache(maxsize=32)(speech.get)

    def _samples(self, index: int) -> np.ndarray:
        event = self.timeline.events[index]
        return self._phrase(event.value) if event.kind == "speech" else self.tones[event.value]

    def mix(self, start: int, end: int) -> np.ndarray:
        """The unlevelled mix of samples [start, end)."""
        out = np.zeros(end - start, np.float32)
        first = bisect.bisect_right(self._max_ends, start)
        last = bisect.bisect_left(self._starts, end)
        for i in range(first, last):
            event = self.timeline.events[i]
            if event.end <= start:
                continue
            samples = self._samples(i)
            a = max(event.start, start)
            b = min(event.end, end, event.start + samples.shape[0])
            if b > a:
                out[a - start: b - start] += samples[a - event.start: b - event.start]
        return out

    def _gain_path(self) -> Path | None:
        """Where this exact mix's gain is kept: keyed by every event, phrase voice and tone."""
        if self.gain_cache is None:
            return None
        key = json.dumps([self.speech.synthesizer.key, self.tones.fingerprint, self.total_samples,
                          [(e.kind, e.start, e.value) for e in self.timeline.events]])
        return self.gain_cache / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    @property
    def gain(self) -> float:
        """The one gain that levels the session: measured once over every chunk, then cached."""
        if self._gain is None:
            path = self._gain_path()
            if path is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    self._gain = float(json.loads(path.read_text())["gain"])
                    return self._gain
            self._gain = self._measure_gain()
            if path is not None:
                store_atomically(path, json.dumps({"gain": self._gain}).encode())
        return self._gain

    def _measure_gain(self) -> float:
        meter = StreamingLoudness(self.timeline.sample_rate)
        peak = 0.0
        for a in range(0, self.total_samples, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, self.total_samples))
            meter.feed(chunk)
            if chunk.size:
                peak = max(peak, float(np.max(np.abs(chunk))))
        loudness = meter.integrated()
        gain = 1.0 if not np.isfinite(loudness) else 10 ** ((TARGET_LUFS_MONO - loudness) / 20)
        if peak > 0:
            gain = min(gain, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
        return float(gain)

    def chunks(self, start: int = 0, end: int | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
        """Levelled float32 mono chunks from `start` to `end` (the end of the session)."""
        end = self.total_samples if end is None else min(end, self.total_samples)
        gain = np.float32(self.gain)
        for a in range(start, end, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, end))
            chunk *= gain
            if progress is not None:
                progress(chunk.shape[0])
            yield chunk


class StreamingLoudness:
    """BS.1770 integrated loudness of a mono stream fed in chunks, in flat memory.

    pyloudnorm measures whole arrays only; this keeps its K-weighting filters' state
    across chunks and one energy per 100 ms, then gates exactly as it does.
    """

    def __init__(self, sample_rate: int) -> None:
        import pyloudnorm
        from scipy.signal import lfilter_zi

        meter = pyloudnorm.Meter(sample_rate)
        self._stages = [(f.b, f.a, f.passband_gain) for f in meter._filters.values()]
        self._state = [lfilter_zi(b, a) * 0.0 for b, a, _ in self._stages]
        self._step = round(0.1 * sample_rate)
        self._block = 4 * self._step
        self._partial = 0.0
        self._partial_n = 0
        self._energies: list[float] = []

    def feed(self, chunk: np.ndarray) -> None:
        from scipy.signal import lfilter

        if not chunk.any() and all(float(np.abs(z).max()) < 1e-12 for z in self._state):
            self._feed_squares(np.zeros(0), silent=chunk.size)  # silence: no filtering needed
            return
        x = chunk.astype(np.float64)
        for i, (b, a, g) in enumerate(self._stages):
            x, state = lfilter(b, a, x, zi=self._state[i])
            state[np.abs(state) < DENORMAL] = 0.0  # a decayed tail would go subnormal: 25x slower
            self._state[i] = state
            x = x * g
        self._feed_squares(x * x)

    def _feed_squares(self, squares: np.ndarray, silent: int = 0) -> None:
        if silent:
            fill = min(silent, self._step - self._partial_n) if self._partial_n else 0
            self._partial_n += fill
            if self._partial_n == self._step:
                self._energies.append(self._partial)
                self._partial, self._partial_n = 0.0, 0
            whole, rest = divmod(silent - fill, self._step)
            self._energies.extend([0.0] * whole)
            self._partial_n += rest
            return
        pos = 0
        while pos < squares.size:
            take = min(self._step - self._partial_n, squares.size - pos)
            self._partial += float(squares[pos: pos + take].sum())
            self._partial_n += take
            pos += take
            if self._partial_n == self._step:
                self._energies.append(self._partial)
                self._partial, self._partial_n = 0.0, 0

    def integrated(self) -> float:
        e = np.array(self._energies)
        if e.size < 4:
            return float("-inf")
        z = (e[:-3] + e[1:-2] + e[2:-1] + e[3:]) / self._block
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10 * np.log10(z)
        gated = z[loud >= -70]
        if gated.size == 0:
            return float("-inf")
        relative = -0.691 + 10 * np.log10(gated.mean()) - 10
        final = z[(loud >= -70) & (loud > relative)]
        if final.size == 0:
            return float("-inf")
        return float(-0.691 + 10 * np.log10(final.mean()))

