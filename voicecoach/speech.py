"""Text to speech behind a small interface, and the on-disk phrase cache.

The default engine is espeak-ng through pyttsx3's binding of it (see `Espeak` for why
not pyttsx3's engine loop). Phrases are trimmed, levelled and peak-limited once, then
cached on disk, so the schedule's times and the rendered audio agree to the sample.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import SAMPLE_RATE
from .cache import ENTRY_SUFFIX, BadEntry, cache_dir, read_entry, store_atomically, write_entry
from .errors import AudioError, UsageError, VoicecoachError
from .espeak_server import NO_ENGINE, OK, READY, REPLY, REQUEST, UNKNOWN_VOICE
from .parallel import workers_deaf
from .loudness import (SPEECH_LUFS, SPEECH_PEAK_DBFS, IMPULSE_SAMPLES, bin_energies, bin_samples, gated_loudness, limit,
                       sound_summary, step_samples, steps_from_bins)

SILENCE_DBFS = -45.0
PEAK_CEILING = 10 ** (SPEECH_PEAK_DBFS / 20)
"""Phrase peaks stay below SPEECH_PEAK_DBFS, leaving room for the session's final level."""
LIMIT_WINDOW_S = 0.005
EDGE_S = 0.01
CONTEXT_SAMPLES = 3 * step_samples(SAMPLE_RATE)
"""Silence either side of a phrase when it is measured, as in a session: the 400 ms blocks
that straddle its edges count, as they do in the session's own measurement."""
PROCESSING_VERSION = "6"
"""Part of every cache key: bump it when trimming or levelling changes."""
DEFAULT_RATE_WPM = 160
NO_ESPEAK = "no text-to-speech engine: install espeak-ng (on Debian: apt-get install espeak-ng)"


PREFETCH_THREADS = 2
"""Threads levelling and storing phrases, or checking entries, at once: one per core here."""
CHECK_THREADS_FROM = 8
"""Fewer phrases than this are checked in the calling thread."""


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
    context = np.zeros(samples.shape[0] + 2 * CONTEXT_SAMPLES, np.float32)
    context[CONTEXT_SAMPLES: CONTEXT_SAMPLES + samples.shape[0]] = samples
    loudness = gated_loudness(steps_from_bins(bin_energies(context, SAMPLE_RATE)), step)
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


ENGINE_JOBS = 2
"""Phrases the helper speaks at once: one per core on the 2-core development machine."""
ENGINE_TIMEOUT_S = 60.0
"""A phrase takes milliseconds; past this the helper is taken to be stuck."""
_SERVER = Path(__file__).with_name("espeak_server.py")
_engines: dict[tuple[str | None, int], EngineProcess] = {}
_engines_lock = threading.Lock()


class EngineProcess:
    """espeak_server.py running for one voice and rate: phrases in, int16 samples out.

    Requests are written under a lock and answered by the helper in any order; a reader
    thread hands each reply to its Future. The helper exits when its stdin closes
    (close(), or this process ending)."""

    def __init__(self, voice: str | None, rate_wpm: int, jobs: int = ENGINE_JOBS) -> None:
        self._proc = _start_helper("serve", voice or "", str(rate_wpm), str(jobs))
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        status, message = _read_ready(self._stdout)
        if status != OK:
            self.close()
            if status == UNKNOWN_VOICE:
                raise UsageError(unknown_voice(voice or "", "espeak"))
            raise AudioError(NO_ESPEAK)
        self.sample_rate = int(message)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[bytes]] = {}
        self._next_id = 0
        self._dead = False
        self._reader = threading.Thread(target=self._read, name="voicecoach-espeak-reader",
                                        daemon=True)
        with workers_deaf():  # a stop signal it took would reach the main thread late
            self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._dead

    def submit(self, text: str) -> Future[bytes]:
        """The phrase's raw int16 samples, when the helper has spoken it."""
        future: Future[bytes] = Future()
        data = text.encode("utf-8", "replace")
        with self._lock:
            if self._dead:
                raise AudioError("the espeak-ng helper process stopped")
            self._next_id += 1
            self._pending[self._next_id] = future
            try:
                self._stdin.write(REQUEST.pack(self._next_id, len(data)) + data)
                self._stdin.flush()
            except OSError:
                self._pending.pop(self._next_id, None)
                self._dead = True
                raise AudioError("the espeak-ng helper process stopped") from None
        return future

    def _read(self) -> None:
        try:
            while True:
                head = self._stdout.read(REPLY.size)
                if len(head) < REPLY.size:
                    return
                request_id, status, size = REPLY.unpack(head)
                payload = self._stdout.read(size)
                if len(payload) < size:
                    return
                with self._lock:
                    future = self._pending.pop(request_id, None)
                if future is None:
                    continue
                if status == OK:
                    future.set_result(payload)
                else:
                    future.set_exception(AudioError(payload.decode(errors="replace")))
        except (OSError, ValueError):  # closed under us
            return
        finally:
            with self._lock:
                self._dead = True
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(AudioError("the espeak-ng helper process stopped"))

    def close(self) -> None:
        """Close the helper's input and wait for it to finish (killed after 5 s)."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._stdout.close()
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)


def _helper_command(*args: str) -> list[str]:
    """espeak_server.py, given pyttsx3's binding to load (the helper runs isolated,
    without site-packages: it starts in a third of the time)."""
    spec = importlib.util.find_spec("pyttsx3")
    if spec is None or spec.origin is None:
        raise AudioError(NO_ESPEAK)
    binding = Path(spec.origin).parent / "drivers" / "_espeak.py"
    return [sys.executable, "-I", "-S", str(_SERVER), str(binding), *args]


def _start_helper(*args: str) -> subprocess.Popen[bytes]:
    command = _helper_command(*args)
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True)
    except OSError as e:
        raise AudioError(f"cannot start the espeak-ng helper process: {e}") from e


def _read_ready(stdout: Any) -> tuple[int, str]:
    head = stdout.read(READY.size)
    if len(head) < READY.size:
        return NO_ENGINE, "the helper process ended at start"
    status, size = READY.unpack(head)
    return status, stdout.read(size).decode(errors="replace")


def _engine(voice: str | None, rate_wpm: int) -> EngineProcess:
    with _engines_lock:
        engine = _engines.get((voice, rate_wpm))
        if engine is None or not engine.alive:
            if engine is not None:
                engine.close()
            if not _engines:
                atexit.register(close_engines)
            engine = EngineProcess(voice, rate_wpm)
            _engines[(voice, rate_wpm)] = engine
        return engine


def close_engines() -> None:
    """Stop every helper process this process started (also done at exit)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()


class Espeak:
    """espeak-ng through pyttsx3's binding of it, in a helper process (espeak_server.py).

    pyttsx3's engine starts espeak-ng in its asynchronous retrieval mode and writes the
    WAV when the end-of-message event arrives, which can come before the last buffer:
    measured here, the same text came out at different lengths from run to run, and in
    a loop a phrase sometimes came out empty. So the engine is not used: espeak-ng is
    initialised in synchronous mode through pyttsx3's own ctypes binding and every
    buffer is collected before a phrase is answered. It runs in a helper process so that
    every phrase is spoken from the same state (the same text, the same samples, in any
    order) and never near the sound server: see espeak_server.py.
    """

    def __init__(self, voice: str | None = None, rate_wpm: int | None = None,
                 volume: float = 1.0) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm or DEFAULT_RATE_WPM
        self.volume = volume
        self.key = f"espeak|{voice or 'default'}|{self.rate_wpm}|{volume:g}|{PROCESSING_VERSION}"
        self._ahead: dict[str, Future[bytes]] = {}
        self._ahead_lock = threading.Lock()

    def warm_up(self) -> None:
        """Start the helper process now, in the background: it is ready in about 50 ms,
        while the caller does other work. Errors are left for `synthesize` to raise."""
        def start() -> None:
            with contextlib.suppress(BaseException):
                _engine(self.voice, self.rate_wpm)

        with workers_deaf():
            threading.Thread(target=start, name="voicecoach-espeak-start", daemon=True).start()

    def check(self) -> None:
        """Start the helper now and wait for it (about 50 ms): UsageError for an unknown
        voice, AudioError without espeak-ng."""
        _engine(self.voice, self.rate_wpm)

    def speak_ahead(self, texts: Iterable[str]) -> None:
        """Ask the helper for these phrases now: it speaks them two at a time while the
        ones it has answered are levelled; `synthesize` then takes each from here."""
        engine = _engine(self.voice, self.rate_wpm)
        with self._ahead_lock:
            for text in texts:
                if text not in self._ahead:
                    self._ahead[text] = engine.submit(text)

    def forget_ahead(self) -> None:
        """Drop phrases asked for ahead and not taken (prefetch stopped short)."""
        with self._ahead_lock:
            self._ahead.clear()

    def voices(self) -> list[Voice]:
        try:
            done = subprocess.run(_helper_command("voices"), capture_output=True,
                                  timeout=ENGINE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AudioError(NO_ESPEAK) from e
        status, size = READY.unpack_from(done.stdout) if len(done.stdout) >= READY.size else (1, 0)
        if status != OK:
            raise AudioError(NO_ESPEAK)
        out = []
        for line in done.stdout[READY.size + size:].splitlines():
            identifier, name, languages = json.loads(line)
            out.append(Voice(identifier, name, (languages,)))
        return out

    def synthesize(self, text: str) -> np.ndarray:
        with self._ahead_lock:
            future = self._ahead.pop(text, None)
        if future is None:
            future = _engine(self.voice, self.rate_wpm).submit(text)
        try:
            raw = future.result(timeout=ENGINE_TIMEOUT_S)
        except TimeoutError:
            raise AudioError(f"espeak-ng did not answer in {ENGINE_TIMEOUT_S:g} s") from None
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return _level(samples) * np.float32(self.volume)


def summary_size(samples: int) -> int:
    """The length of loudness.sound_summary for a sound of this many samples."""
    bins = -(-(samples + IMPULSE_SAMPLES - 1) // bin_samples(SAMPLE_RATE))
    return bins + 2


def _meaningful(samples: np.ndarray, summary: np.ndarray) -> str | None:
    """What is wrong with a phrase and its summary, or None: one float32 vector within
    [-1, 1] whose peak is the summary's, and energies that only add up from 0."""
    if samples.dtype != np.float32 or samples.ndim != 1 or summary.ndim != 1:
        return "not a float32 vector"
    if summary.shape[0] != summary_size(samples.shape[0]):
        return "a summary of the wrong length"
    peak = max(float(samples.max()), -float(samples.min())) if samples.size else 0.0
    if not peak <= 1.0 or summary[0] != peak:  # NaN fails both
        return f"a peak of {peak} against its summary's {summary[0]}"
    if summary[1] != 0.0 or not (np.diff(summary[1:]) >= 0).all():
        return "energies that do not add up"
    return None


class PhraseCache:
    """Phrases on disk keyed by engine, voice, rate, volume and text, each stored with its
    summary (loudness.sound_summary) in one checked entry (cache.py).

    An entry is checked when this process first reads it: its header, size and digest,
    then what its numbers mean (`_meaningful`). One that fails is never used: the phrase
    is made again and stored over it. New entries are written to a temporary name,
    fsynced and linked into place, first writer wins, so two processes sharing the cache
    see whole phrases and the same ones; the engine starts only on a miss.
    """

    def __init__(self, synthesizer: Synthesizer, folder: Path | None = None) -> None:
        self.synthesizer = synthesizer
        self.folder = (folder or cache_dir()) / "phrases"
        self.synthesized = 0
        self.rebuilt = 0
        """Entries found damaged and made again."""
        self.on_synthesized: Callable[[int], None] | None = None
        """Told of each phrase made: a progress display's update."""
        self._lengths: dict[str, int] = {}
        self._checked: dict[Path, tuple[int, int, int, int]] = {}
        self._unstored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """Phrases made here that could not be stored, kept in memory instead."""
        self._count_lock = threading.Lock()
        self._making: dict[str, Future[tuple[np.ndarray, np.ndarray]]] = {}

    def _name(self, text: str) -> str:
        return hashlib.sha256(f"{self.synthesizer.key}\n{text}".encode()).hexdigest()

    def path(self, text: str) -> Path:
        name = self._name(text)
        return self.folder / name[:2] / f"{name}{ENTRY_SUFFIX}"

    def _read(self, path: Path, ours: tuple[int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """The entry's phrase and summary if it is whole and sound; None if missing or not.
        Checked once per file and process: the same file unchanged is not hashed again,
        nor the file (device, inode) `ours` that this process has just written."""
        try:
            entry = read_entry(path, summary_size)
            if entry.identity[:2] == ours:
                self._checked[path] = entry.identity
            elif self._checked.get(path) != entry.identity:
                entry.check(path.name[: -len(ENTRY_SUFFIX)])
                problem = _meaningful(entry.samples, entry.summary)
                if problem is not None:
                    raise BadEntry(problem)
                self._checked[path] = entry.identity
        except (OSError, BadEntry):
            return None
        return entry.samples, entry.summary

    def _entry(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        kept = self._unstored.get(text)
        if kept is not None:
            return kept
        path = self.path(text)
        found = self._read(path)
        if found is not None:
            return found
        # One thread makes a phrase; another that needs it meanwhile (the scheduler, while
        # prefetch threads work ahead of it) waits for that one.
        with self._count_lock:
            making = self._making.get(text)
            if making is None:
                mine: Future[tuple[np.ndarray, np.ndarray]] = Future()
                self._making[text] = mine
        if making is not None:
            return making.result()
        try:
            made = self._read(path) or self._make(text, path)
        except BaseException as e:
            mine.set_exception(e)
            raise
        else:
            mine.set_result(made)
            return made
        finally:
            with self._count_lock:
                del self._making[text]

    def _make(self, text: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
        damaged = os.path.lexists(path)
        samples = np.ascontiguousarray(self.synthesizer.synthesize(text), dtype=np.float32)
        summary = sound_summary(samples, SAMPLE_RATE)
        problem = _meaningful(samples, summary)
        if problem is not None:
            raise AudioError(f"the speech engine gave unusable audio for {text!r} ({problem})")
        with self._count_lock:
            self.synthesized += 1
            self.rebuilt += damaged
            if self.on_synthesized is not None:
                self.on_synthesized(1)
        # First writer wins, and every process then reads its copy; a damaged entry is
        # replaced. Phrases come out the same from any process (espeak_server.py), so
        # the copies agree; and a timeline is rendered from the very phrases it was
        # scheduled with.
        name = path.name[: -len(ENTRY_SUFFIX)]
        ours = store_atomically(path, lambda f: write_entry(f, name, samples, summary),
                                replace=damaged)
        stored = self._read(path, ours)
        if stored is None:  # an unwritable cache, or something in the way: keep our own
            samples.flags.writeable = summary.flags.writeable = False
            stored = self._unstored[text] = (samples, summary)
        return stored

    def get(self, text: str) -> np.ndarray:
        """The phrase: levelled float32 samples, memory-mapped read-only."""
        return self._entry(text)[0]

    def summary(self, text: str) -> np.ndarray:
        """The phrase's peak and K-weighted energies (loudness.sound_summary), stored with
        it: what a session's loudness is worked out from without rendering it.
        Memory-mapped, and not kept: a long session's many phrases never sit in memory
        together."""
        return self._entry(text)[1]

    def expect(self, texts: list[str]) -> None:
        """Start the engine early if the first of these phrases is not stored: then the
        cache is cold for this session, and the engine will be needed."""
        warm_up = getattr(self.synthesizer, "warm_up", None)
        if warm_up is not None and texts and not self.path(texts[0]).exists():
            warm_up()

    def prefetch(self, texts: Iterable[str]) -> None:
        """Make every phrase not cached yet (or damaged), several at a time: an engine
        that can be asked ahead (Espeak) is given them all at once and speaks two at a
        time in its helper process, while two threads here level and store the ones it
        has answered (numpy lets go of the GIL). Entries already there are checked here,
        two threads at a time too (hashlib lets go of the GIL): 12 ms of SHA-256 for
        upper-back-knot's 50 phrases (20 MB), plus 2 ms for what their numbers mean."""
        unique = list(dict.fromkeys(texts))
        if len(unique) > CHECK_THREADS_FROM:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="voicecoach-check") as pool:
                found = list(pool.map(lambda t: self._read(self.path(t)) is not None, unique))
        else:
            found = [self._read(self.path(t)) is not None for t in unique]
        todo = [t for t, ok in zip(unique, found, strict=True) if not ok]
        if not todo:
            return
        ahead = getattr(self.synthesizer, "speak_ahead", None)
        if ahead is not None and len(todo) > 1:
            ahead(todo)
        try:
            if len(todo) < 2:
                self.get(todo[0])
                return
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="voicecoach-speech")
            try:
                for _ in pool.map(self.get, todo):
                    pass
            finally:  # on an error or Ctrl-C, the phrases not started are dropped
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            forget = getattr(self.synthesizer, "forget_ahead", None)
            if forget is not None:
                forget()

    def missing(self, texts: list[str]) -> int:
        """How many distinct phrases are not cached yet (or are damaged)."""
        return sum(1 for t in dict.fromkeys(texts) if self._read(self.path(t)) is None)

    def length(self, text: str) -> int:
        if text not in self._lengths:
            self._lengths[text] = int(self.get(text).shape[0])
        return self._lengths[text]


def unknown_voice(voice: str, engine: str) -> str:
    """Why --voice was refused, and the fix: often a voice of the other engine."""
    if engine == "espeak":
        from .piper import piper_voices

        if any(voice in (v.id, v.name) for v in piper_voices()):
            return f"'{voice}' is a piper voice: add --engine piper"
        return f"unknown voice '{voice}': `voicecoach voices` lists them"
    from .espeak_server import _match_voice

    try:
        espeak = [(v.id, v.name, ", ".join(v.languages)) for v in Espeak().voices()]
    except VoicecoachError:
        espeak = []
    if _match_voice(voice, espeak) is not None:
        return f"'{voice}' is an espeak-ng voice: add --engine espeak"
    return f"unknown piper voice '{voice}'"
