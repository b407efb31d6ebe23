"""Render a timeline to one stream of PCM chunks: speech and tones mixed, levelled.

Memory stays flat however long the session: chunks are mixed one at a time from the
phrase cache (memory-mapped) and the tone bank. Every phrase and tone was levelled when
it was made (speech.py, tones.py), so the session's one gain is a constant known before
the first sample, and a chunk can be mixed as soon as the sounds in it are laid: play
starts at the first phrase while the rest are still being made. The constant brings the
bundled sessions to the spoken-word target within a few tenths of an LU (the gated
loudness of a session depends on where its words fall, which is not known until every
phrase is made; see loudness.SESSION_GAIN_DB). Peaks stay at or below -1 dBFS: a sound
that overlaps others is turned down where their peaks together would pass it.
`loudness_and_peak` measures a session (BS.1770, see loudness.py) without a pass over
the audio, from its sounds' energies in 5-sample bins (loudness.sound_summary). Play and
export both read `Rendering.chunks`, so what is heard and what is written are the same
samples.

Music (music.py) goes under a growing timeline as under a whole one: each track's level
is a constant of the track, and the music at a sample depends only on the sounds near it
and on the session's end, so a chunk is final once the timeline is laid LOOK_AHEAD_S past
it (and the stream waits, if it must, between sounds). The session's gain is the same
constant under music; the music under a sound (ducked, its peak bounded from its tracks'
measured peaks) counts with the sounds that overlap there, so a sound is turned down
where the music under it would take it past the ceiling.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import SAMPLE_RATE
from .loudness import PEAK_CEILING_DBFS, SESSION_GAIN_DB, BINS_PER_STEP, bin_samples, gated_loudness, sound_summary, step_samples
from .schedule import Event, Section, Span, Timeline
from .speech import PhraseCache

if TYPE_CHECKING:
    from .music import MusicBus

CHUNK_SAMPLES = 22050
AHEAD_S = 3.0
"""Start, and after waiting for speech play on, once this much is laid: a device that
takes a second or two at once (a Bluetooth headset) has it, and nothing stutters. Warm,
that is a few phrases read; cold, the second phrase is made beside the first (two at a
time) anyway."""
SESSION_GAIN = 10 ** (SESSION_GAIN_DB / 20)
PEAK_CEILING = 10 ** (PEAK_CEILING_DBFS / 20)


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

    def peak(self, kind: str) -> float:
        """The tone's peak, as the first value of its summary, without the K-weighting
        the rest of the summary costs (a plain session needs only the peaks)."""
        samples = self._tones[kind]
        return max(float(np.max(samples)), -float(np.min(samples))) if samples.size else 0.0

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
    """A timeline's audio, produced on demand in chunks from any sample position.

    The timeline may still be growing (pipeline.open_session with `stream`): sounds are
    added as they are laid (`extend`, in the order of the finished timeline's events), and
    a chunk is mixed once every sound that reaches into it is known. Play and export mix
    the same sounds in the same order with the same gain whether the timeline was whole
    from the start or grew while playing, so they are the same samples.
    """

    def __init__(self, timeline: Timeline | None, speech: PhraseCache, tones: ToneBank,
                 chunk_samples: int = CHUNK_SAMPLES, sample_rate: int = SAMPLE_RATE,
                 music: MusicBus | None = None) -> None:
        self.music = music
        """Music under the voice (music.py): mixed in, and counted against the ceiling."""
        self.speech = speech
        self.tones = tones
        self.chunk_samples = chunk_samples
        self.sample_rate = sample_rate
        self._look_ahead = 0
        if music is not None:
            from .music import LOOK_AHEAD_S

            self._look_ahead = round(LOOK_AHEAD_S * sample_rate)
        self.on_wait: Callable[[int], None] | None = None
        """Told of the sample at which the stream waits for speech still being made."""
        self.waiting_at: int | None = None
        """That sample, while the stream waits there: a player ahead of its device hears
        silence there only once it has played what was handed before."""
        self._events: list[Event] = []
        self._starts: list[int] = []
        self._max_ends: list[int] = []
        self._scales: list[float] = []
        self._cluster_end = -1
        self._cluster_peak = 0.0
        self._frontier = 0
        self._ready = 0
        """Samples before this are final (the frontier, less the music's look-ahead)."""
        self._timeline: Timeline | None = None
        self._chapters: list[tuple[str, int]] = []
        self._spans: list[Span] = []
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._phrase = functools.lru_cache(maxsize=64)(speech.get)
        self._peaks: dict[tuple[str, str], float] = {}
        """Each sound's peak, read once: a sound said many times is not mapped again."""
        if timeline is not None:
            self.extend(list(timeline.events), timeline.duration_samples)
            self.finish(timeline)

    @property
    def gain(self) -> float:
        """The session's one gain, known before the first sample: every phrase and tone
        was levelled when made, and so is every track of music."""
        return SESSION_GAIN

    # -- the timeline, as it grows

    def extend(self, events: list[Event], frontier: int,
               chapters: list[tuple[str, int]] | None = None, spans: list[Span] | None = None) -> None:
        """Add the sounds laid since the last call (sorted, none before them); every
        sample before `frontier` is now final. `chapters` and `spans` are the schedule's
        own lists so far (read for `timeline_now`)."""
        if chapters is not None:
            self._chapters = chapters
        if spans is not None:
            self._spans = spans
        if self.music is not None:
            self.music.lay(events)
            self.music.measure_until(frontier)
        scales = [self._scale(e) for e in events]
        with self._changed:
            for event, scale in zip(events, scales, strict=True):
                self._events.append(event)
                self._starts.append(event.start)
                self._max_ends.append(max(event.end, self._max_ends[-1] if self._max_ends else event.end))
                self._scales.append(scale)
            self._frontier = max(self._frontier, frontier)
            self._ready = self._frontier if self.music is None \
                else self._between_sounds(self._frontier - self._look_ahead)
            self._changed.notify_all()

    def _between_sounds(self, at: int) -> int:
        """`at`, or if a sound laid plays across it, the start of the first such: the
        stream waits only where no sound is cut (at the frontier itself, none is)."""
        while at > 0:
            i = bisect.bisect_right(self._max_ends, at)  # the first sound to end after `at`
            if i == len(self._events) or self._starts[i] >= at:
                break
            at = self._starts[i]
        return max(at, 0)

    def finish(self, timeline: Timeline) -> None:
        """The whole timeline is laid: the session's length is known."""
        if self.music is not None:
            self.music.end(timeline.duration_samples)
        with self._changed:
            self._timeline = timeline
            self._frontier = timeline.duration_samples
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """Laying the timeline failed: whoever waits for it gets the error."""
        with self._changed:
            self._error = error
            self._changed.notify_all()

    def _scale(self, event: Event) -> float:
        """1, unless this sound overlaps sounds before it and their peaks together (with
        the music's under it) would pass the ceiling at the session's gain: then it is
        turned down so they do not. Only ever a later sound: what is before it may have
        been played already."""
        peak = self._peak_of(event) * self.gain
        if event.start >= self._cluster_end:
            self._cluster_peak = 0.0
        room = PEAK_CEILING - self._cluster_peak
        if self.music is not None:
            room -= self.music.peak(event.start, event.end) * self.gain
        scale = 1.0 if peak <= room else max(0.0, room) / peak
        self._cluster_peak += scale * peak
        self._cluster_end = max(self._cluster_end, event.end)
        return float(scale)

    @property
    def complete(self) -> bool:
        return self._timeline is not None

    @property
    def timeline(self) -> Timeline:
        """The whole timeline, waiting for it to be laid if it is still growing."""
        with self._changed:
            while self._timeline is None:
                if self._error is not None:
                    raise self._error
                self._changed.wait()
            return self._timeline

    def timeline_now(self) -> Timeline:
        """The whole timeline if it is laid, else what is laid so far (its duration the
        samples known to be final): play's status line reads this."""
        with self._changed:
            if self._timeline is not None:
                return self._timeline
            events, frontier = tuple(self._events), self._frontier
            chapters, spans = list(self._chapters), list(self._spans)
        starts = [0] + [start for _, start in chapters[1:]] if chapters else []  # the first from 0
        ends = starts[1:] + [max(frontier, starts[-1])] if chapters else []
        sections = tuple(Section(title, a, b) for (title, _), a, b in zip(chapters, starts, ends, strict=True))
        return Timeline("", "", "", frontier, events, sections, self.sample_rate,
                        spans=tuple(sorted(spans, key=lambda s: (s.start, -s.end))))

    @property
    def total_samples(self) -> int:
        return self.timeline.duration_samples

    # -- audio

    def _samples(self, index: int) -> np.ndarray:
        event = self._events[index]
        return self._phrase(event.value) if event.kind == "speech" else self.tones[event.value]

    def mix(self, start: int, end: int) -> np.ndarray:
        """The unlevelled mix of samples [start, end), from the sounds laid so far."""
        out = np.zeros(end - start, np.float32)
        first = bisect.bisect_right(self._max_ends, start)
        last = bisect.bisect_left(self._starts, end)
        for i in range(first, last):
            event = self._events[i]
            if event.end <= start:
                continue
            samples = self._samples(i)
            a = max(event.start, start)
            b = min(event.end, end, event.start + samples.shape[0])
            if b > a:
                piece = samples[a - event.start: b - event.start]
                scale = self._scales[i]
                out[a - start: b - start] += piece if scale == 1.0 else piece * np.float32(scale)
        if self.music is not None:
            out += self.music.samples(start, end)
        return out

    def _peak_of(self, event: Event) -> float:
        key = (event.kind, event.value)
        peak = self._peaks.get(key)
        if peak is None:
            peak = self._peaks[key] = (float(self.speech.summary(event.value)[0])
                                       if event.kind == "speech" else self.tones.peak(event.value))
        return peak

    def _summary(self, index: int) -> np.ndarray:
        return self._summary_of(self._events[index])

    def _summary_of(self, event: Event) -> np.ndarray:
        if event.kind == "speech":
            return self.speech.summary(event.value)
        return self.tones.summary(event.value, self.sample_rate)

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

    def chunks(self, start: int = 0, end: int | None = None,
               size: int | None = None) -> Iterator[np.ndarray]:
        """Levelled float32 mono chunks from `start` to `end` (the end of the session), of
        `size` samples (chunk_samples unless given; the last may be shorter).

        While the timeline grows, a chunk is mixed once it is final. If the stream
        catches up with what is laid, it hands on what is final and then waits there:
        that point is always between sounds (every sound laid ends before it), so a
        player falls silent between phrases, never mid-word. It goes on once AHEAD_S
        more are laid (or the rest), and `on_wait` is told. The first chunk, too, waits
        for AHEAD_S."""
        gain = np.float32(self.gain)
        a = start
        first = True
        while True:
            b = self._final_until(a, end, first)
            if b is None:
                return
            first = False
            while a < b:
                c = min(a + (size or self.chunk_samples), b)
                chunk = self.mix(a, c)
                chunk *= gain
                yield chunk
                a = c

    def _final_until(self, a: int, end: int | None, first: bool) -> int | None:
        """Wait until samples from `a` on are final, and say up to where; None at the end."""
        stalled = False
        with self._changed:
            try:
                while True:
                    if self._error is not None:
                        raise self._error
                    stop = end
                    if self._timeline is not None:
                        total = self._timeline.duration_samples
                        stop = total if end is None else min(end, total)
                    if stop is not None and a >= stop:
                        return None
                    if self._timeline is not None:
                        return stop
                    ahead = round(AHEAD_S * self.sample_rate) if stalled or first else self.chunk_samples
                    need = a + ahead if end is None else min(a + ahead, end)
                    if self._ready >= need or (self._ready > a and not first and not stalled):
                        return self._ready if end is None else min(self._ready, end)
                    if not first and not stalled:
                        stalled = True
                        self.waiting_at = a
                        if self.on_wait is not None:
                            self.on_wait(a)
                    self._changed.wait()
            finally:
                self.waiting_at = None
