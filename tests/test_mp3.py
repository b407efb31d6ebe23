"""MP3 through LAME directly (voicecoach/mp3.py): the Info frame it writes, and two
encoders joined at a silence, decoded by libsndfile's mpg123 and read by mutagen."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import mutagen.mp3
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests import tone_detect
from tests.test_export import BURST_AMPLITUDE, onsets
from tests.test_faults import fill, small_disk  # noqa: F401, F811 (a fixture)
from voicecoach import SAMPLE_RATE, mp3, tones
from voicecoach.audiofile import Seekable, write_audio
from voicecoach.errors import VoicecoachError
from voicecoach.export import _silences, write_session
from voicecoach.pipeline import prepare

SR = SAMPLE_RATE
MINUTE = 60 * SR


@pytest.mark.parametrize("samples", [1, 2, 575, 576, 577, 1151, 1152, 1153, 5000, 66150])
def test_lame_makes_the_frames_the_split_counts_on(samples: int) -> None:
    """SPLIT_LEAD: n samples make ceil((n + 1152) / 576) frames at 22050 Hz."""
    out = io.BytesIO()
    stream = mp3.Mp3Stream(out, SR, 1)
    stream.write(np.zeros(samples, np.int16))
    stream.close()
    frames = mutagen.mp3.MP3(io.BytesIO(out.getvalue())).info  # read back from the Info frame
    assert round(frames.length * SR) == samples
    assert len(stream._counter.offsets) == -(-(samples + mp3.SPLIT_LEAD) // 576)


def session_like(total: int, sound_every: int = 10 * SR) -> npt.NDArray[np.float32]:
    """1 kHz bursts of 150 ms every 10 s from 1 s on: long silences, hard onsets."""
    signal = np.zeros(total, np.float32)
    burst = BURST_AMPLITUDE * np.sin(2 * np.pi * 1000 * np.arange(3307) / SR)
    for start in range(SR, total - 3307, sound_every):
        signal[start:start + 3307] = burst
    return signal


def silences_of(signal: npt.NDArray[np.float32]) -> list[tuple[int, int]]:
    loud = np.flatnonzero(signal)
    edges = np.flatnonzero(np.diff(loud) > 1)
    spans = [(0, int(loud[0]))]
    spans += [(int(loud[i]) + 1, int(loud[i + 1])) for i in edges]
    return spans + [(int(loud[-1]) + 1, len(signal))]


def chunked(signal: npt.NDArray[np.float32], start: int, end: int) -> Iterator[np.ndarray]:
    for at in range(start, end, 4410):
        yield signal[at:min(at + 4410, end)]


def test_two_encoders_join_seamlessly_at_a_silence(tmp_path: Path) -> None:
    total = 2 * MINUTE + 12345  # off the frame grid
    signal = session_like(total)
    silences = silences_of(signal)
    cut = mp3.find_cut(total, silences, SR)
    assert cut is not None and cut % 576 == 0 and abs(cut - total // 2) < 10 * SR
    split, single = tmp_path / "split.mp3", tmp_path / "single.mp3"
    write_audio(split, Seekable(lambda a, b: chunked(signal, a, b), silences),
                total_samples=total)
    write_audio(single, chunked(signal, 0, total), total_samples=total)
    one, _ = sf.read(single, dtype="float32")
    two, _ = sf.read(split, dtype="float32")
    assert len(two) == len(one) == total  # exact to the sample, as one encoder's
    assert round(mutagen.mp3.MP3(split).info.length * SR) == total
    # every burst where it was written, on both sides of the join
    assert onsets(two) == onsets(one) == [int(i) + 2 for i in range(SR, total - 3307, 10 * SR)]
    # the join itself: the encoders' padding and delay decode to silence, as the session is
    around = slice(cut - mp3.SPLIT_LEAD - mp3.SPLIT_GUARD, cut + mp3.SPLIT_GUARD)
    assert not np.any(signal[around])
    assert np.max(np.abs(two[around])) < 1 / 32768
    # and the audio is as close to the signal as one encoder's (joined frames lose nothing)
    def snr(decoded: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(signal**2) / np.sum((decoded - signal) ** 2)))
    assert snr(two) == pytest.approx(snr(one), abs=0.5)
    assert snr(two) > 20


def test_no_cut_without_a_long_enough_silence_or_in_a_short_session() -> None:
    assert mp3.find_cut(10 * MINUTE, [(0, 100), (5 * MINUTE, 5 * MINUTE + 4000)], SR) is None
    assert mp3.find_cut(10 * MINUTE, [(5 * MINUTE, 5 * MINUTE + 8000)], SR) is not None
    assert mp3.find_cut(50 * SR, [(0, 50 * SR)], SR) is None  # parts of 25 s: one encoder
    assert mp3.find_cut(10 * MINUTE, [(0, 10 * MINUTE)], 44100) is None  # MPEG-1: not measured


def test_a_session_cut_in_two_keeps_every_tone_on_its_sample(tmp_path: Path) -> None:
    """mid-back-knot (9 minutes): the exported MP3 decodes to the WAV's length, and every
    tone's waveform best matches at exactly its scheduled sample."""
    session = prepare("mid-back-knot")
    timeline = session.timeline
    cut = mp3.find_cut(timeline.duration_samples, _silences(timeline), SR)
    assert cut is not None  # this export was made by two encoders
    path = tmp_path / "session.mp3"
    write_session(session, path)
    decoded, _ = sf.read(path, dtype="float32")
    assert len(decoded) == timeline.duration_samples
    tone_events = [e for e in timeline.events if e.kind == "tone"]
    assert tone_events
    for event in tone_events:
        template = tones.generate(event.value)
        low = event.start - 20 * SR // 1000
        window = decoded[low:event.start + 20 * SR // 1000 + template.size]
        found = low + int(np.argmax(np.correlate(window, template, mode="valid")))
        assert found == event.start, event
        assert tone_detect.identify(decoded[event.start:event.start + SR]) == event.value


def test_the_samples_before_a_cut_must_be_silent(tmp_path: Path) -> None:
    """A cut is only ever made in silence; a caller that claims silence wrongly is caught."""
    total = 2 * MINUTE
    signal = np.full(total, 0.1, np.float32)
    with pytest.raises(AssertionError, match="not silent"):
        write_audio(tmp_path / "x.mp3", Seekable(lambda a, b: chunked(signal, a, b),
                                                 [(0, total)]), total_samples=total)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_filling_up_under_two_encoders_says_so_and_leaves_nothing(
        small_disk: Path) -> None:  # noqa: F811
    """Both encoders write to the small disk (the second into an unnamed file beside the
    temporary one): whichever meets the full disk first stops the export, in one line."""
    total = 3 * MINUTE
    rng = np.random.default_rng(3)
    signal = (rng.standard_normal(total) * 0.3).astype(np.float32)
    signal[total // 2 - SR: total // 2 + SR] = 0  # the one silence, where the cut goes
    silences = [(total // 2 - SR, total // 2 + SR)]
    assert mp3.find_cut(total, silences, SR) is not None
    fill(small_disk, leave=200 * 1024)  # room for the floor check, not for 3 minutes of noise
    target = small_disk / "noise.mp3"
    with pytest.raises(VoicecoachError) as caught:
        write_audio(target, Seekable(lambda a, b: chunked(signal, a, b), silences),
                    total_samples=total)
    assert str(caught.value) == f"cannot write '{target}': no space left on device"
    assert os.listdir(small_disk) == ["filler"]
