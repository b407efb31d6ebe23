"""Render a timeline to one stream of PCM chunks: speech and tones mixed, levelled.

Memory stays flat however long the session: chunks are mixed one at a time from the
phrase cache (memory-mapped) and the tone bank. One gain brings the session to the
spoken-word target with peaks at or below -1 dBFS. It is measured (BS.1770, see
loudness.py) without a pass over the audio: K-weighting is linear, so the session's
K-weighted energy in each 100 ms step is the sum of its sounds' own, from their energies
in 5-sample bins, cached with each phrase and laid at their starts. Play and export both read `Rendering.chunks`, so what is
heard and what is written are the same samples.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path

import numpy as np

from .loudness import BINS_PER_STEP, bin_energies, bin_samples, gated_loudness, step_samples
from .schedule import Timeline
from .speech import PhraseCache

TARGET_LUFS_MONO = -19.0
"""Spoken word, mono; the same audio in two channels measures 3 LU louder: -16 LUFS."""
PEAK_CEILING_DBFS = -1.0
CHUNK_SAMPLES = 22050


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
        """Changes whenever any tone's samples do."""
        self._energies: dict[str, np.ndarray] = {}

    def __getitem__(self, kind: str) -> np.ndarray:
        return self._tones[kind]

    def length(self, kind: str) -> int:
        return int(self._tones[kind].shape[0])

    def energies(self, kind: str, rate: int) -> np.ndarray:
        """The tone's K-weighted energy per 5-sample bin, as PhraseCache.energies."""
        if kind not in self._energies:
            self._energies[kind] = bin_energies(self._tones[kind], rate)
        return self._energies[kind]


class Rendering:
    """A timeline's audio, produced on demand in chunks from any sample position."""

    def __init__(self, timeline: Timeline, speech: PhraseCache, tones: ToneBank,
                 chunk_samples: int = CHUNK_SAMPLES) -> None:
        self.timeline = timeline
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

    @property
    def gain(self) -> float:
        """The one gain that levels the session, worked out once from its sounds' bins."""
        if self._gain is None:
            loudness, peak = self.loudness_and_peak()
            gain = 1.0 if not np.isfinite(loudness) else 10 ** ((TARGET_LUFS_MONO - loudness) / 20)
            if peak > 0:
                gain = min(gain, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
            self._gain = float(gain)
        return self._gain

    def _energies(self, index: int) -> np.ndarray:
        event = self.timeline.events[index]
        if event.kind == "speech":
            return self.speech.energies(event.value)
        return self.tones.energies(event.value, self.timeline.sample_rate)

    def loudness_and_peak(self) -> tuple[float, float]:
        """The unlevelled mix's integrated loudness (LUFS) and a bound on its peak.

        Each sound's bins are laid at its start, in the session's 100 ms steps; a bin
        that straddles two of the session's is split between them in proportion, as if
        its energy were even over its 5 samples: the one approximation, within 1e-5 LU
        of a meter run over the rendered mix. Where sounds overlap, their cross terms are
        left out of the loudness, and the peak bound adds their peaks, so the ceiling
        holds whatever the timeline. Memory is one number per step, not per sample.
        """
        rate = self.timeline.sample_rate
        step = step_samples(rate)
        bin_size = bin_samples(rate)
        steps = self.total_samples // step  # whole steps only, as a streaming meter counts
        step_energies = np.zeros(steps)
        sounds: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
        peak = cluster_peak = 0.0
        cluster_end = -1
        for index, event in enumerate(self.timeline.events):
            key = (event.kind, event.value)
            if key not in sounds:
                sounds[key] = self._sound_summary(index)
            cumulative, sound_peak = sounds[key]
            first, offset = divmod(event.start, bin_size)
            last = min(steps, (first + cumulative.shape[0] - 1) // BINS_PER_STEP + 1)
            if first // BINS_PER_STEP < last:
                # Sums of the sound's bins falling in each step it spans: bins at their own
                # place, and (for the share that spills) one bin later.
                bounds = np.arange(first // BINS_PER_STEP, last + 1) * BINS_PER_STEP - first
                top = cumulative.shape[0] - 1
                here = np.diff(cumulative[np.clip(bounds, 0, top)])
                spilt = np.diff(cumulative[np.clip(bounds - 1, 0, top)])
                share = offset / bin_size
                step_energies[first // BINS_PER_STEP: last] += (1.0 - share) * here + share * spilt
            cluster_peak = cluster_peak + sound_peak if event.start < cluster_end else sound_peak
            cluster_end = max(cluster_end, event.end) if event.start < cluster_end else event.end
            peak = max(peak, cluster_peak)
        return gated_loudness(step_energies, step), peak

    def _sound_summary(self, index: int) -> tuple[np.ndarray, float]:
        """A sound's running sum of bin energies (from 0) and its peak."""
        samples = self._samples(index)
        cumulative = np.zeros(self._energies(index).shape[0] + 1)
        np.cumsum(self._energies(index), dtype=np.float64, out=cumulative[1:])
        peak = max(float(samples.max()), -float(samples.min())) if samples.size else 0.0
        return cumulative, peak

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
        """Levelled float32 mono chunks from `start` to `end` (the end of the session)."""
        end = self.total_samples if end is None else min(end, self.total_samples)
        gain = np.float32(self.gain)
        for a in range(start, end, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, end))
            chunk *= gain
            yield chunk
