"""Render a timeline to one stream of PCM chunks: speech and tones mixed, levelled.

Memory stays flat however long the session: chunks are mixed one at a time from the
phrase cache (memory-mapped) and the tone bank. One gain brings the session to the
spoken-word target with peaks at or below -1 dBFS. It is measured (BS.1770, see
loudness.py) without a pass over the audio: K-weighting is linear, so the session's
K-weighted energy in each 100 ms step is the sum of its sounds' own, from their energies
in 5-sample bins (loudness.sound_summary), cached with each phrase and laid at their
starts. Play and export both read `Rendering.chunks`, so what is
heard and what is written are the same samples.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .loudness import PEAK_CEILING_DBFS, TARGET_LUFS_MONO, BINS_PER_STEP, bin_samples, gated_loudness, sound_summary, step_samples
from .schedule import Timeline
from .speech import PhraseCache

if TYPE_CHECKING:
    from .music import MusicBus

CHUNK_SAMPLES = 22050


class ToneBank:
    """Tone samples by kind: the routine's own WAV where it names one, else the shipped one."""

    def __init__(self, sounds: dict[str, str] | None = None, base_dir: Path | None = None) -> None:
        from . import tones

        self._tones: dict[str, np.ndarray] = {}
        for kind in tones.TONE_KINDS:
            own = (sounds or {}).get(kind)
            if own:
                path = Path(own) if base_dir is None else base_dir / own
                self._tones[kind] = tones.load_wav(path)
            else:
                self._tones[kind] = tones.bundled(kind)
        self._summaries: dict[str, np.ndarray] = {}

    def __getitem__(self, kind: str) -> np.ndarray:
        return self._tones[kind]

    def length(self, kind: str) -> int:
        return int(self._tones[kind].shape[0])

    def summary(self, kind: str, rate: int) -> np.ndarray:
        """The tone's peak and K-weighted energies, as PhraseCache.summary."""
        if kind not in self._summaries:
            self._summaries[kind] = sound_summary(self._tones[kind], rate)
        return self._summaries[kind]


def _lay(sums: np.ndarray, starts: np.ndarray, bin_size: int, step_energies: np.ndarray) -> None:
    """Add one sound's energy, played at each of `starts`, to the session's steps.

    `sums` is the sound's running sum of bin energies from 0. For each play, the sum at
    each step boundary (in the sound's own bins) is read, for the bins at their own place
    and for the share of each that spills one bin later; their differences are the
    energies per step.
    """
    steps = step_energies.shape[0]
    top = sums.shape[0] - 1
    first, offset = np.divmod(starts, bin_size)
    share = offset / bin_size
    s0 = first // BINS_PER_STEP
    s1 = np.minimum(steps, (first + top) // BINS_PER_STEP + 1)
    live = s0 < s1
    first, share, s0, s1 = first[live], share[live], s0[live], s1[live]
    if not first.size:
        return
    counts = s1 - s0 + 1
    begins = np.cumsum(counts) - counts
    at_step = np.arange(int(counts.sum())) - np.repeat(begins - s0, counts)
    bound = at_step * BINS_PER_STEP - np.repeat(first, counts)
    spill = np.repeat(share, counts)
    running = ((1.0 - spill) * sums[np.clip(bound, 0, top)]
               + spill * sums[np.clip(bound - 1, 0, top)])
    inside = np.ones(running.shape[0] - 1, dtype=bool)
    inside[begins[1:] - 1] = False  # no difference across two plays
    step_energies += np.bincount(at_step[:-1][inside], np.diff(running)[inside], minlength=steps)


class Rendering:
    """A timeline's audio, produced on demand in chunks from any sample position."""

    def __init__(self, timeline: Timeline, speech: PhraseCache, tones: ToneBank,
                 chunk_samples: int = CHUNK_SAMPLES, music: MusicBus | None = None) -> None:
        self.timeline = timeline
        self.music = music
        """Music under the voice (music.py): mixed in, and counted in the one gain."""
        self.speech = speech
        self.tones = tones
        self.chunk_samples = chunk_samples
        self.total_samples = timeline.duration_samples
        events = timeline.events
        self._starts = [e.start for e in events]
        self._max_ends = list(accumulate((e.end for e in events), max))
        self._gain: float | None = None
        self._phrase = functools.lru_cache(maxsize=64)(speech.get)

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
        if self.music is not None:
            out += self.music.samples(start, end)
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

    def _summary(self, index: int) -> np.ndarray:
        event = self.timeline.events[index]
        if event.kind == "speech":
            return self.speech.summary(event.value)
        return self.tones.summary(event.value, self.timeline.sample_rate)

    def loudness_and_peak(self) -> tuple[float, float]:
        """The unlevelled mix's integrated loudness (LUFS) and a bound on its peak.

        Each sound's bins are laid at its start, in the session's 100 ms steps; a bin
        that straddles two of the session's is split between them in proportion, as if
        its energy were even over its 5 samples: the one approximation, within 1e-3 LU
        of a meter run over the rendered mix block by block (a block that close to the
        relative gate can fall on its other side: a few thousandths of an LU on the
        session, tests/test_render.py). Where sounds overlap, their cross terms are
        left out of the loudness, and the peak bound adds their peaks, so the ceiling
        holds whatever the timeline. All events at once, in numpy; memory is a few
        numbers per step, not per sample.
        """
        rate = self.timeline.sample_rate
        step = step_samples(rate)
        bin_size = bin_samples(rate)
        steps = self.total_samples // step  # whole steps only, as a streaming meter counts
        events = self.timeline.events
        if not events or steps == 0:
            return float("-inf"), 0.0
        by_sound: dict[tuple[str, str], list[int]] = {}
        for index, event in enumerate(events):
            by_sound.setdefault((event.kind, event.value), []).append(index)
        starts = np.array([e.start for e in events])
        peaks = np.zeros(len(events))
        step_energies = np.zeros(steps)
        for indices in by_sound.values():  # one sound's summary in memory at a time
            summary = self._summary(indices[0])
            at = np.array(indices)
            peaks[at] = summary[0]
            _lay(summary[1:], starts[at], bin_size, step_energies)
        if self.music is not None:
            step_energies += self.music.step_energies(steps)
        # Differences of running sums can round a hair below zero where there is no sound.
        return gated_loudness(np.maximum(step_energies, 0.0), step), self._peak_bound(peaks)

    def _peak_bound(self, peaks: np.ndarray) -> float:
        """The loudest sound, or where sounds overlap the sum of their peaks (with the
        music's peak under them, and the music's alone in between)."""
        music = self.music
        peak = cluster_peak = 0.0
        cluster_start = cluster_end = -1
        for event, sound_peak in zip(self.timeline.events, peaks.tolist(), strict=True):
            if event.start < cluster_end:
                cluster_peak += sound_peak
                cluster_end = max(cluster_end, event.end)
            else:
                if music is not None and cluster_end > 0:
                    peak = max(peak, cluster_peak + music.peak(cluster_start, cluster_end))
                cluster_peak, cluster_start, cluster_end = sound_peak, event.start, event.end
            peak = max(peak, cluster_peak)
        if music is not None:
            if cluster_end > 0:
                peak = max(peak, cluster_peak + music.peak(cluster_start, cluster_end))
            peak = max(peak, music.peak(0, self.total_samples))
        return peak

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
        """Levelled float32 mono chunks from `start` to `end` (the end of the session)."""
        end = self.total_samples if end is None else min(end, self.total_samples)
        gain = np.float32(self.gain)
        for a in range(start, end, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, end))
            chunk *= gain
            yield chunk
