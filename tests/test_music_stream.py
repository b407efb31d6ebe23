"""A session with music streams like one without (issue 14): play starts at the first
phrases, music and all, and the stream is the export's, sample for sample.

The synthesizer is real espeak-ng held back until the test lets it go (test_stream.Gated);
the music is a chord progression encoded to MP3 here (test_music.chord_progression).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.test_music import TRACK_RATE, chord_progression
from tests.test_stream import OPTIONS, ROUTINE, Gated, distinct_phrases
from voicecoach import SAMPLE_RATE as SR
from voicecoach.loudness import PEAK_CEILING_DBFS
from voicecoach.music import FADE_OUT_S, LOOK_AHEAD_S, MUSIC_PEAK, MusicBus, _Resampled, find_tracks, measure
from voicecoach.pipeline import Session, prepare
from voicecoach.render import Rendering
from voicecoach.speech import Espeak, PhraseCache
from voicecoach.spec import MusicSettings


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("music") / "chords.mp3"
    soundfile.write(path, chord_progression(), TRACK_RATE)
    return str(path)


def exported(folder: Path, track: str, warm: bool = True) -> tuple[np.ndarray, Session]:
    """The export's samples, from the same (now warm) phrase cache and measurement."""
    cache = PhraseCache(Espeak(), folder)
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, music=MusicSettings(track))
    samples = np.concatenate(list(session.rendering.chunks()))
    assert cache.synthesized == 0 or not warm
    return samples, session


def test_the_first_chunk_comes_with_the_first_phrases_music_and_all(tmp_path: Path,
                                                                    track: str) -> None:
    engine = Gated(free=3)
    cache = PhraseCache(engine, tmp_path)  # cold, and the track not measured yet
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, music=MusicSettings(track),
                      stream=True)
    chunks = session.rendering.chunks()
    first = next(chunks)
    assert cache.synthesized <= 3 < distinct_phrases()
    assert not session.rendering.complete
    engine.gate.set()
    streamed = np.concatenate([first, *chunks])
    whole, again = exported(tmp_path, track)
    assert np.array_equal(streamed, whole)
    assert session.timeline == again.timeline
    assert np.abs(first[: SR // 5]).max() > 0  # the music fading in under the lead-in
    assert np.abs(first).max() > 0.1  # and the title, spoken


@pytest.mark.parametrize("free", [6, 25])
def test_a_slow_synthesizer_makes_the_stream_wait_between_phrases(tmp_path: Path, track: str,
                                                                  free: int) -> None:
    """The stream waits LOOK_AHEAD_S (or more) before what is laid, never inside a sound,
    and what it hands on before and after is the export's."""
    engine = Gated(free=free)
    cache = PhraseCache(engine, tmp_path)
    session = prepare(ROUTINE, options=OPTIONS, cache=cache, music=MusicSettings(track),
                      stream=True)
    rendering = session.rendering
    waited: list[tuple[int, int, int]] = []
    pieces: list[np.ndarray] = []

    def on_wait(sample: int) -> None:
        waited.append((sample, sum(c.shape[0] for c in pieces),
                       rendering.timeline_now().duration_samples))
        engine.gate.set()

    rendering.on_wait = on_wait
    for chunk in rendering.chunks():
        pieces.append(chunk)
    whole, again = exported(tmp_path, track)
    assert np.array_equal(np.concatenate(pieces), whole)
    assert waited
    for at, handed, laid in waited:
        assert at == handed  # every sample before a wait was handed on
        assert at <= laid - LOOK_AHEAD_S * SR  # the ducking and fade-out there are settled
        for event in again.timeline.events:
            assert not event.start < at < event.end, (at, event)


def test_the_fade_out_waits_for_the_end(tmp_path: Path, track: str) -> None:
    """Every sound laid, but the session's end not known: the last FADE_OUT_S are not
    handed on (they fade out once it is), the rest is."""
    whole, session = exported(tmp_path, track, warm=False)
    timeline = session.timeline
    total = timeline.duration_samples
    bus = MusicBus(find_tracks(Path(track)), SR, store=tmp_path / "music")
    growing = Rendering(None, session.rendering.speech, session.rendering.tones, music=bus)
    growing.extend(list(timeline.events), total)
    waited: list[tuple[int, int]] = []
    pieces: list[np.ndarray] = []

    def on_wait(sample: int) -> None:
        waited.append((sample, sum(c.shape[0] for c in pieces)))
        threading.Thread(target=growing.finish, args=(timeline,)).start()

    growing.on_wait = on_wait
    for chunk in growing.chunks():
        pieces.append(chunk)
    assert np.array_equal(np.concatenate(pieces), whole)
    [(at, handed)] = waited
    assert at == handed
    assert total - (LOOK_AHEAD_S + 10) * SR < at <= total - FADE_OUT_S * SR


def test_a_track_is_measured_once_and_read_back_with_checks(tmp_path: Path, track: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "music"
    found = find_tracks(Path(track))[0]
    first = measure(found, SR, store)
    [path] = store.glob("*.json")
    good = path.read_bytes()
    decoded = []
    block = _Resampled.block
    monkeypatch.setattr(_Resampled, "block", lambda self, k: decoded.append(k) or block(self, k))
    assert measure(found, SR, store) == first
    assert decoded == []  # read back, not measured
    data = json.loads(good)
    broken = [b"", good[:-5], b"[]", json.dumps({**data, "peak": -1.0}).encode(),
              json.dumps({**data, "loudness": "loud"}).encode(),
              json.dumps({**data, "identity": {**data["identity"], "size": 1}}).encode()]
    for bad in broken:
        path.write_bytes(bad)
        assert measure(found, SR, store) == first
        assert decoded  # measured again
        assert path.read_bytes() == good  # and stored again
        decoded.clear()
    copy = tmp_path / "copy.mp3"
    copy.write_bytes(Path(track).read_bytes())
    info = os.stat(track)
    os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert measure(find_tracks(copy)[0], SR, store) == first
    assert decoded == []  # the same file elsewhere: the same identity
    os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    assert measure(find_tracks(copy)[0], SR, store) == first
    assert decoded  # touched since: measured again (and stored beside the other)
    assert measure(found, 44100, store) != first  # another rate is another measurement
    assert len(list(store.glob("*.json"))) == 3


def test_a_spiky_track_is_capped_under_the_ceiling(tmp_path: Path) -> None:
    """Clicks in silence measure quiet, so levelling them to the voice would send their
    peaks far past the ceiling: the track's gain is capped at MUSIC_PEAK, and the export
    keeps every sample at or under -1 dBFS (streamed or not)."""
    rate = 22050
    x = np.zeros(8 * rate, np.float32)
    x[::rate // 3] = 0.9  # a click every third of a second
    path = tmp_path / "clicks.wav"
    soundfile.write(path, x, rate)
    cache = PhraseCache(Espeak(), tmp_path)
    session = prepare(ROUTINE, cache=cache, music=MusicSettings(str(path), 0.0))
    bus = session.rendering.music
    assert bus is not None
    assert bus.gain(0) * bus.measured(0).peak == pytest.approx(MUSIC_PEAK)
    whole = np.concatenate(list(session.rendering.chunks()))
    assert 20 * np.log10(np.abs(whole).max()) <= PEAK_CEILING_DBFS
    streamed = prepare(ROUTINE, cache=cache, music=MusicSettings(str(path), 0.0), stream=True)
    assert np.array_equal(np.concatenate(list(streamed.rendering.chunks())), whole)
