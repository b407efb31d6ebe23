"""Play starts at the first phrase: the timeline is laid while its phrases are made, and
the stream is the export's, sample for sample.

The synthesizer here is real espeak-ng held back at one phrase until the test lets it go
(`Gated`): a synthesizer slower than the playhead, made deterministic without timing.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from voicecoach.pipeline import _spoken, prepare
from voicecoach.compile import compile_routine
from voicecoach.load import load
from voicecoach.play import Coach, Making
from voicecoach.schedule import Timeline
from voicecoach.speech import Espeak, PhraseCache
from voicecoach.spec import Options

from tests.test_play import FakePlayer

ROUTINE = "mid-back-knot"
OPTIONS = Options(reps=3)


class Gated:
    """Real espeak-ng that makes its first `free` phrases, then waits for `gate`."""

    def __init__(self, free: int) -> None:
        self.inner = Espeak()
        self.key = self.inner.key  # the same phrases, stored under the same names
        self.free = free
        self.gate = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> np.ndarray:
        with self._lock:
            self.calls += 1
            held = self.calls > self.free
        if held:
            self.gate.wait()
        return self.inner.synthesize(text)


def distinct_phrases() -> int:
    return len(set(_spoken(compile_routine(load(ROUTINE), None, OPTIONS))))


def export_samples(folder: Path) -> tuple[np.ndarray, Timeline]:
    """The export's samples, from the same (now warm) phrase cache."""
    cache = PhraseCache(Espeak(), folder)
    session = prepare(ROUTINE, options=OPTIONS, cache=cache)
    samples = np.concatenate(list(session.rendering.chunks()))
    assert cache.synthesized == 0
    return samples, session.timeline


def test_the_first_chunk_comes_before_the_session_is_synthesized(tmp_path: Path) -> None:
    engine = Gated(free=3)
    cache = PhraseCache(engine, tmp_path)  # cold
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, stream=True)
    chunks = session.rendering.chunks()
    first = next(chunks)  # what the player is handed first
    made = cache.synthesized
    assert made <= 3 < distinct_phrases()
    assert not session.rendering.complete
    assert np.abs(first).max() > 0.1  # the title, spoken
    engine.gate.set()
    streamed = np.concatenate([first, *chunks])
    exported, timeline = export_samples(tmp_path)
    assert np.array_equal(streamed, exported)
    assert session.timeline == timeline
    assert cache.synthesized == distinct_phrases()  # each phrase made once, by one thread


@pytest.mark.parametrize("free", [6, 25])
def test_a_slow_synthesizer_makes_the_stream_wait_between_phrases(tmp_path: Path, free: int) -> None:
    """The stream runs up to what is laid, then waits there (a player falls silent): the
    point is between sounds, never inside one, and `on_wait` says where."""
    engine = Gated(free=free)
    cache = PhraseCache(engine, tmp_path)
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, stream=True)
    waited: list[int] = []
    handed: list[int] = []

    def on_wait(sample: int) -> None:
        waited.append(sample)
        handed.append(sum(c.shape[0] for c in pieces))
        engine.gate.set()  # the engine catches up

    session.rendering.on_wait = on_wait
    pieces: list[np.ndarray] = []
    for chunk in session.rendering.chunks():
        pieces.append(chunk)
    streamed = np.concatenate(pieces)
    exported, timeline = export_samples(tmp_path)
    assert np.array_equal(streamed, exported)
    assert waited and waited == handed  # every sample before a wait was handed on
    for at in waited:  # the first where the engine was held back; then where it was caught up with
        assert 0 < at < timeline.duration_samples
        for event in timeline.events:
            assert not event.start < at < event.end, (at, event)  # not inside a word or a tone
        assert not exported[at - 100: at].any()  # silence where it waits
    spoken_before = [e for e in timeline.events if e.kind == "speech" and e.start < waited[0]]
    assert spoken_before


def test_the_status_line_reads_a_timeline_still_being_laid(tmp_path: Path) -> None:
    engine = Gated(free=4)
    cache = PhraseCache(engine, tmp_path)
    making = Making()
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, stream=True, progress=making)
    player = FakePlayer()
    told: list[tuple[str, ...]] = []
    coach = Coach(session, player, on_complete=told.append, making=making)  # type: ignore[arg-type]
    coach.start()
    next(session.rendering.chunks())  # the first phrases are laid
    status = coach.status()  # how much of the introduction is laid depends on the threads
    counted = re.fullmatch(r"Introduction · .* s left in step · making speech (\d+) of (\d+)", status)
    assert counted, status
    made, total = map(int, counted.groups())
    assert 1 <= made <= engine.free < total == distinct_phrases()
    coach.key("n")  # the next step is not laid yet: nothing to skip to, and no quitting
    assert (player.jumps, coach.quit) == ([], False)
    coach.poll()
    assert told == []
    engine.gate.set()
    whole = session.timeline
    coach.poll()
    assert told == [whole.notices]
    coach.key("n")
    assert player.jumps == [whole.sections[1].start]
    assert coach.status().endswith("%")
    assert making.made == making.total == total  # every phrase counted once
