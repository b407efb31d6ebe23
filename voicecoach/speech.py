"""Text to speech behind a small interface, and the on-disk phrase cache.

The default engine is espeak-ng through pyttsx3's binding of it (see `Espeak` for why
not pyttsx3's engine loop). Phrases are trimmed, levelled and peak-limited once, then
cached on disk, so the schedule's times and the rendered audio agree to the sample.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from . import SAMPLE_RATE
from .cache import cache_dir, load_vector, store_atomically
from .errors import AudioError, UsageError
from .loudness import bin_energies, gated_loudness, limit, sound_summary, step_samples, steps_from_bins

SPEECH_LUFS = -19.0
"""Every phrase is levelled to this loudness, so the voice is even from line to line."""
SILENCE_DBFS = -45.0
PEAK_CEILING = 10 ** (-2.5 / 20)
"""Phrase peaks stay below -2.5 dBFS, leaving room for the session's final level."""
LIMIT_WINDOW_S = 0.005
EDGE_S = 0.01
PROCESSING_VERSION = "4"
"""Part of every cache key: bump it when trimming or levelling changes."""
DEFAULT_RATE_WPM = 160
NO_ESPEAK = "no text-to-speech engine: install espeak-ng (on Debian: apt-get install espeak-ng)"


PREFETCH_THREADS = 2
_ENGINE_LOCK = threading.Lock()
"""espeak-ng keeps its state in the library: one phrase is spoken at a time per process."""


class Synthesizer(Protocol):
    key: str

    def synthesize(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    languages: tuple[str, ...]


def _level(samples: np.ndarray) -> np.ndarray:
    """Trim silence at the edges, level the phrase to SPEECH_LUFS, hold peaks under the ceiling.

    espeak-ng's peaks stand 16 dB or more above its loudness: scaling a whole phrase
    down for one plosive would leave it quieter than the rest, so peaks are limited.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        return samples
    loud = np.flatnonzero(np.abs(samples) > 10 ** (SILENCE_DBFS / 20))
    if loud.size == 0:
        return np.zeros(0, np.float32)
    edge = int(EDGE_S * SAMPLE_RATE)
    samples = samples[max(0, loud[0] - edge): loud[-1] + edge]
    step = step_samples(SAMPLE_RATE)
    loudness = gated_loudness(steps_from_bins(bin_energies(samples, SAMPLE_RATE)), step)
    if np.isfinite(loudness):
        window = int(LIMIT_WINDOW_S * SAMPLE_RATE)
        levelled = samples * np.float32(10 ** ((SPEECH_LUFS - loudness) / 20))
        limited = limit(levelled, PEAK_CEILING, window)
        # Limiting takes up to a dB off a peaky phrase. Its energy ratio tells how much,
        # without a second loudness measurement (the costly part of a cold export).
        if limited is not levelled:
            lost = float(np.dot(limited, limited)) / max(float(np.dot(levelled, levelled)), 1e-30)
            limited = limit(levelled * np.float32(1 / np.sqrt(lost)), PEAK_CEILING, window)
        samples = limited
    return samples.astype(np.float32, copy=False)


class Espeak:
    """espeak-ng through pyttsx3's binding of it, in this process, one phrase at a time.

    pyttsx3's engine starts espeak-ng in its asynchronous retrieval mode and writes the
    WAV when the end-of-message event arrives, which can come before the last buffer:
    measured here, the same text came out at different lengths from run to run, and in
    a loop a phrase sometimes came out empty. So the engine is not used: espeak-ng is
    initialised in synchronous mode through pyttsx3's own ctypes binding and every
    buffer is collected by our callback before `Synth` returns.
    """

    _initialised = False

    def __init__(self, voice: str | None = None, rate_wpm: int | None = None,
                 volume: float = 1.0) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm or DEFAULT_RATE_WPM
        self.volume = volume
        self.key = f"espeak|{voice or 'default'}|{self.rate_wpm}|{volume:g}|{PROCESSING_VERSION}"
        self._buffers: list[bytes] = []
        self._ready = False

    @staticmethod
    def _binding() -> Any:
        try:
            from pyttsx3.drivers import _espeak
        except Exception as e:  # the binding loads libespeak-ng when imported
            raise AudioError(NO_ESPEAK) from e
        if not Espeak._initialised:
            if _espeak.Initialize(_espeak.AUDIO_OUTPUT_SYNCHRONOUS, 500) == -1:
                raise AudioError(NO_ESPEAK)
            Espeak._initialised = True
        return _espeak

    def _setup(self) -> Any:
        espeak = self._binding()
        if not self._ready:
            if self.voice is not None:
                match = next((v for v in self.voices() if self.voice in (v.id, v.name)), None)
                if match is None:
                    raise UsageError(f"unknown voice '{self.voice}': `voicecoach voices` lists them")
                espeak.SetVoiceByName(match.id.encode())
            else:
                espeak.SetVoiceByName(b"en")
            espeak.SetParameter(espeak.RATE, self.rate_wpm, 0)
            self._ready = True
        espeak.SetSynthCallback(self._collect)
        return espeak

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._buffers.append(ctypes.string_at(wav, count * 2))
        return 0

    def voices(self) -> list[Voice]:
        espeak = self._binding()
        out = []
        for v in espeak.ListVoices():
            languages = v.languages[1:].split(b"\0", 1)[0].decode(errors="replace") if v.languages else ""
            out.append(Voice((v.identifier or b"").decode(errors="replace"),
                             (v.name or b"").decode(errors="replace"), (languages,)))
        return out

    def synthesize(self, text: str) -> np.ndarray:
        with _ENGINE_LOCK:  # one library, one voice setting and buffer list at a time
            espeak = self._setup()
            self._buffers = []
            status = espeak.Synth(text, flags=espeak.CHARS_UTF8)
            espeak.Synchronize()
            raw = b"".join(self._buffers)
            self._buffers = []
        if status != 0 or not raw:
            raise AudioError(f"espeak-ng produced no audio for {text!r}")
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return _level(samples) * np.float32(self.volume)


def _summary_path(phrase_path: Path) -> Path:
    return phrase_path.with_name(phrase_path.name[: -len(".npy")] + ".k.npy")


class PhraseCache:
    """Phrases on disk keyed by engine, voice, rate, volume and text.

    Files are written to a temporary name and linked into place, first writer wins, so
    two processes sharing the cache see whole phrases and the same ones; the engine
    starts only on a miss.
    """

    def __init__(self, synthesizer: Synthesizer, folder: Path | None = None) -> None:
        self.synthesizer = synthesizer
        self.folder = (folder or cache_dir()) / "phrases"
        self.synthesized = 0
        self.on_synthesized: Callable[[int], None] | None = None
        """Told of each phrase made: a progress display's update."""
        self._lengths: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def path(self, text: str) -> Path:
        digest = hashlib.sha256(f"{self.synthesizer.key}\n{text}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, text: str) -> np.ndarray:
        path = self.path(text)
        try:
            return load_vector(path)
        except (FileNotFoundError, ValueError, OSError):
            pass
        samples = self.synthesizer.synthesize(text).astype(np.float32, copy=False)
        with self._count_lock:
            self.synthesized += 1
            if self.on_synthesized is not None:
                self.on_synthesized(1)
        # The first process to store a phrase wins and every process then uses its copy:
        # espeak-ng's output can differ by a few samples from run to run, and a timeline
        # must be rendered from the very phrases it was scheduled with.
        store_atomically(path, lambda f: np.save(f, samples), replace=False)
        try:
            stored = load_vector(path)
        except (OSError, ValueError):  # an unwritable cache: use our own
            return samples
        if np.array_equal(stored, samples):  # ours won: keep its summary too
            self._keep_summary(path, samples)
        return stored

    def _keep_summary(self, path: Path, samples: np.ndarray) -> np.ndarray:
        """Work out the summary of the phrase stored at `path` and store it beside it."""
        summary = sound_summary(samples, SAMPLE_RATE)
        store_atomically(_summary_path(path), lambda f: np.save(f, summary))
        return summary

    def summary(self, text: str) -> np.ndarray:
        """The phrase's peak and K-weighted energies (loudness.sound_summary), cached beside
        it: what a session's loudness is worked out from without rendering it. A pure
        function of the stored phrase, so it is rebuilt from it if lost. Memory-mapped,
        and not kept: a long session's many phrases never sit in memory together."""
        path = self.path(text)
        try:
            return load_vector(_summary_path(path))
        except (FileNotFoundError, ValueError, OSError):
            return self._keep_summary(path, self.get(text))

    def prefetch(self, texts: Iterable[str]) -> None:
        """Make every phrase not cached yet, two at a time: while the engine speaks one
        (ctypes lets go of the GIL), the one before is levelled and stored. On 2 cores
        this made upper-back-knot's 50 phrases in 0.31 s instead of 0.42 s."""
        todo = [t for t in dict.fromkeys(texts) if not self.path(t).exists()]
        if len(todo) < 2:
            for text in todo:
                self.get(text)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="voicecoach-speech")
        try:
            for _ in pool.map(self.get, todo):
                pass
        finally:  # on an error or Ctrl-C, the phrases not started are dropped
            pool.shutdown(wait=True, cancel_futures=True)

    def missing(self, texts: list[str]) -> int:
        """How many distinct phrases are not cached yet."""
        return sum(1 for t in dict.fromkeys(texts) if not self.path(t).exists())

    def length(self, text: str) -> int:
        if text not in self._lengths:
            self._lengths[text] = int(self.get(text).shape[0])
        return self._lengths[text]
