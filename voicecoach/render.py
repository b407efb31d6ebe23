"""Render a timeline to one stream of PCM chunks: speech and tones mixed, levelled.

Memory stays flat however long the session: chunks are mixed one at a time from the
phrase cache (memory-mapped) and the tone bank. Loudness is measured in a first pass
over the same chunks (BS.1770, see loudness.py), then one gain brings the session to
the spoken-word target with peaks kept at or below -1 dBFS. Play and export both read `Rendering.chunks`, so what is
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

from .loudness import LoudnessMeter
from .schedule import Timeline
from .speech import PhraseCache, store_atomically

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
        return self.level()

    def gain_known(self) -> bool:
        """Whether the gain is at hand (this process or the cache), with no pass to make."""
        if self._gain is None:
            path = self._gain_path()
            if path is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    self._gain = float(json.loads(path.read_text())["gain"])
        return self._gain is not None

    def level(self, progress: Callable[[int], None] | None = None) -> float:
        """The gain, measuring it first if needed; `progress` hears of each chunk measured."""
        if not self.gain_known():
            self._gain = self._measure_gain(progress)
            path = self._gain_path()
            if path is not None:
                store_atomically(path, json.dumps({"gain": self._gain}).encode())
        assert self._gain is not None
        return self._gain

    def _measure_gain(self, progress: Callable[[int], None] | None) -> float:
        meter = LoudnessMeter(self.timeline.sample_rate)
        peak = 0.0
        for a in range(0, self.total_samples, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, self.total_samples))
            if progress is not None:
                progress(chunk.shape[0])
            meter.feed(chunk)
            if chunk.size:
                peak = max(peak, float(np.max(np.abs(chunk))))
        loudness = meter.integrated()
        gain = 1.0 if not np.isfinite(loudness) else 10 ** ((TARGET_LUFS_MONO - loudness) / 20)
        if peak > 0:
            gain = min(gain, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
        return float(gain)

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
        """Levelled float32 mono chunks from `start` to `end` (the end of the session)."""
        end = self.total_samples if end is None else min(end, self.total_samples)
        gain = np.float32(self.gain)
        for a in range(start, end, self.chunk_samples):
            chunk = self.mix(a, min(a + self.chunk_samples, end))
            chunk *= gain
            yield chunk
