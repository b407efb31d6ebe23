"""Tones: distinct by spectrum, click-free, levelled against the voice, shipped current."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
import soundfile as sf
from scipy import signal

from tests import tone_detect
from voicecoach import SAMPLE_RATE, tones
from voicecoach.errors import AudioError
from voicecoach.tones import TONE_KINDS, TONE_SECONDS

REPO = Path(__file__).resolve().parent.parent
SOUNDS = REPO / "sounds"
QUANTUM = 1 / 32768  # one 16-bit step
MAX_SECONDS = {
    "countdown": 0.1,
    "switch": 0.35,
    "hold_start": 0.45,
    "hold_end": 0.45,
    "rest": 0.8,
    "finish": 1.2,
}
WINDOW_SAMPLES = round(1.2 * SAMPLE_RATE)  # covers every tone, with room to spare

Floats = npt.NDArray[np.float64]


def loudness_lufs(samples: npt.ArrayLike, sample_rate: int = SAMPLE_RATE) -> float:
    """BS.1770 with pyloudnorm, short tones padded with silence to one 400 ms block."""
    data = np.asarray(samples, dtype=np.float64)
    padded = np.zeros(max(len(data), math.ceil(0.4 * sample_rate)))
    padded[: len(data)] = data
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(padded))


def in_window(samples: npt.ArrayLike, start: int = 0) -> Floats:
    """A second of silence with the samples placed at start."""
    data = np.asarray(samples, dtype=np.float64)
    window = np.zeros(WINDOW_SAMPLES)
    window[start : start + len(data)] = data
    return window


def noise(rms_dbfs: float, seed: int) -> Floats:
    return np.random.default_rng(seed).normal(0.0, 10 ** (rms_dbfs / 20), WINDOW_SAMPLES)


def voice(seed: int, lufs: float) -> Floats:
    """Speech-like sound: a sawtooth whose pitch drifts like a voice, through vowel formants,
    in syllables; at the given loudness."""
    rng = np.random.default_rng(seed)
    time_s = np.arange(2 * WINDOW_SAMPLES) / SAMPLE_RATE
    pitch_hz = 120 + 30 * np.sin(2 * np.pi * 0.7 * time_s + rng.uniform(0, 2 * np.pi))
    pitch_hz += 10 * np.sin(2 * np.pi * 3.1 * time_s)
    phase = np.cumsum(pitch_hz) / SAMPLE_RATE
    source = 2 * (phase % 1.0) - 1
    out = np.zeros_like(source)
    for formant_hz, bandwidth_hz, gain in ((700, 130, 1.0), (1220, 70, 0.5), (2600, 160, 0.25)):
        radius = np.exp(-np.pi * bandwidth_hz / SAMPLE_RATE)
        angle = 2 * np.pi * formant_hz / SAMPLE_RATE
        out += gain * signal.lfilter(
            [1 - radius], [1, -2 * radius * np.cos(angle), radius**2], source
        )
    out *= 0.5 * (1 - np.cos(2 * np.pi * 4 * time_s))  # four syllables a second
    scaled: Floats = out * 10 ** ((lufs - loudness_lufs(out)) / 20)
    return scaled


# --- spectrum ----------------------------------------------------------------


def test_kinds_are_the_six_the_routines_use() -> None:
    assert TONE_KINDS == ("hold_start", "hold_end", "switch", "countdown", "rest", "finish")
    assert set(TONE_SECONDS) == set(TONE_KINDS)


def test_no_two_kinds_share_a_frequency() -> None:
    for first, second in itertools.combinations(TONE_KINDS, 2):
        for a_hz, b_hz in itertools.product(tones.signature(first), tones.signature(second)):
            assert abs(a_hz - b_hz) > 60, (first, second, a_hz, b_hz)


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_dominant_peaks_are_the_signature(kind: str) -> None:
    samples = tones.generate(kind).astype(np.float64)
    magnitude = np.abs(np.fft.rfft(samples, 4 * len(samples)))
    hz_per_bin = SAMPLE_RATE / (4 * len(samples))
    peaks, _ = signal.find_peaks(magnitude, distance=round(40 / hz_per_bin))
    expected = tones.signature(kind)
    strongest = sorted(peaks[np.argsort(magnitude[peaks])[-len(expected) :]] * hz_per_bin)
    assert strongest == pytest.approx(sorted(expected), abs=5)


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_nothing_above_5_khz(kind: str) -> None:
    power = np.abs(np.fft.rfft(tones.generate(kind).astype(np.float64))) ** 2
    hz = np.fft.rfftfreq(len(tones.generate(kind)), 1 / SAMPLE_RATE)
    assert power[hz >= 5000].sum() < 1e-6 * power.sum()


# --- identify ----------------------------------------------------------------


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_confusion_matrix_is_diagonal(kind: str) -> None:
    window = in_window(tones.generate(kind))
    assert tone_detect.identify(window) == kind
    assert [k for k in TONE_KINDS if tone_detect.matches(window, k)] == [kind]


@pytest.mark.parametrize("kind", TONE_KINDS)
@pytest.mark.parametrize("rms_dbfs", [-60.0, -40.0, -30.0])
def test_identified_under_quiet_noise(kind: str, rms_dbfs: float) -> None:
    window = in_window(tones.generate(kind)) + noise(rms_dbfs, seed=len(kind))
    assert tone_detect.identify(window) == kind
    assert [k for k in TONE_KINDS if tone_detect.matches(window, k)] == [kind]


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_identified_under_a_little_speech(kind: str) -> None:
    """Speech 4 LU under the tone, over all of it: the worst a scheduled overlap gets."""
    for seed in range(4):
        window = in_window(tones.generate(kind)) + voice(seed, lufs=-25.0)[:WINDOW_SAMPLES]
        assert tone_detect.identify(window) == kind, seed


@pytest.mark.parametrize("kind", TONE_KINDS)
@pytest.mark.parametrize("offset_ms", [-20, -5, -1, 1, 5, 20])
def test_identified_a_little_off_the_onset(kind: str, offset_ms: int) -> None:
    tone = tones.generate(kind)
    offset = round(offset_ms * SAMPLE_RATE / 1000)
    window = in_window(tone, start=offset) if offset > 0 else in_window(tone[-offset:])
    assert tone_detect.identify(window) == kind


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_identified_at_any_level_and_at_44100_hz(kind: str) -> None:
    assert tone_detect.identify(0.01 * in_window(tones.generate(kind))) == kind
    resampled = signal.resample_poly(tones.generate(kind).astype(np.float64), 2, 1)
    assert tone_detect.identify(resampled, 44100) == kind
    assert tone_detect.identify(tones.generate(kind, 44100), 44100) == kind


def test_nothing_is_identified_in_silence_noise_or_speech() -> None:
    assert tone_detect.identify(np.zeros(WINDOW_SAMPLES)) is None
    assert tone_detect.identify(np.zeros(0)) is None
    assert tone_detect.identify(noise(-20.0, seed=1)) is None
    for seed in range(6):
        speech = voice(seed, lufs=-19.0)
        for start in range(0, WINDOW_SAMPLES, 2205):
            assert tone_detect.identify(speech[start : start + WINDOW_SAMPLES]) is None, (seed, start)


def test_a_tone_cut_short_is_not_identified() -> None:
    """A window must cover the whole tone: the finish's first note alone is no finish."""
    assert tone_detect.identify(tones.generate("finish")[: round(0.1 * SAMPLE_RATE)]) is None


def test_stereo_is_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        tone_detect.identify(np.zeros((100, 2)))


# --- shape, length, level ------------------------------------------------------


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_samples_are_float32_mono_and_read_only(kind: str) -> None:
    samples = tones.generate(kind)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert not samples.flags.writeable
    assert np.all(np.abs(samples) <= 1.0)


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_duration_within_limit(kind: str) -> None:
    assert len(tones.generate(kind)) == round(TONE_SECONDS[kind] * SAMPLE_RATE)
    assert TONE_SECONDS[kind] <= MAX_SECONDS[kind]
    assert len(tones.generate(kind, 48000)) == round(TONE_SECONDS[kind] * 48000)


def test_countdown_is_a_tick() -> None:
    assert 0.06 <= TONE_SECONDS["countdown"] <= 0.08


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_fades_leave_no_click_at_the_edges(kind: str) -> None:
    samples = tones.generate(kind).astype(np.float64)
    peak = np.max(np.abs(samples))
    one_ms = SAMPLE_RATE // 1000
    assert samples[0] == 0.0 and abs(samples[-1]) < 1e-4
    assert np.max(np.abs(samples[1:one_ms])) > 0.0  # the onset is at sample 0
    for edge in (samples[:one_ms], samples[-one_ms:]):
        # 1 ms into a 5 ms raised-cosine fade the envelope is sin(pi / 10) ** 2 = 0.095.
        assert np.max(np.abs(edge)) < 0.1 * peak
        assert np.max(np.abs(np.diff(edge))) < 0.04


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_level_against_the_voice(kind: str) -> None:
    samples = tones.generate(kind)
    assert loudness_lufs(samples) == pytest.approx(tones.TARGET_LUFS, abs=1.0)
    assert tones.TARGET_LUFS == -21.0
    assert 20 * np.log10(np.max(np.abs(samples))) <= -3.0


# --- the shipped WAVs -----------------------------------------------------------


def test_sounds_folder_ships_one_wav_per_kind() -> None:
    assert sorted(p.stem for p in SOUNDS.glob("*.wav")) == sorted(TONE_KINDS)
    assert (SOUNDS / "__init__.py").exists()


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_shipped_wav_is_current(kind: str) -> None:
    """Regenerate with `python scripts/make_sounds.py` when this fails."""
    info = sf.info(str(SOUNDS / f"{kind}.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    pcm, _ = sf.read(SOUNDS / f"{kind}.wav", dtype="int16")
    expected = np.round(tones.generate(kind).astype(np.float64) * 32768)
    assert pcm.shape == expected.shape
    assert np.max(np.abs(pcm - expected)) <= 1


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_bundled_is_the_shipped_wav(kind: str) -> None:
    samples = tones.bundled(kind)
    assert samples.dtype == np.float32 and not samples.flags.writeable
    assert tones.bundled(kind) is samples  # cached
    np.testing.assert_allclose(samples, tones.generate(kind), rtol=0, atol=QUANTUM)
    assert loudness_lufs(samples) == pytest.approx(tones.TARGET_LUFS, abs=1.0)
    assert tone_detect.identify(in_window(samples)) == kind


def test_bundled_at_another_rate() -> None:
    samples = tones.bundled("switch", 44100)
    assert len(samples) == 2 * len(tones.bundled("switch"))
    assert tone_detect.identify(samples, 44100) == "switch"


def test_make_sounds_is_deterministic(tmp_path: Path) -> None:
    script = REPO / "scripts" / "make_sounds.py"
    for out in ("a", "b"):
        subprocess.run([sys.executable, script, "--out", tmp_path / out], check=True)
    for kind in TONE_KINDS:
        first = (tmp_path / "a" / f"{kind}.wav").read_bytes()
        assert first == (tmp_path / "b" / f"{kind}.wav").read_bytes()


# --- a person's own sounds ---------------------------------------------------------


def test_load_wav_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as caught:
        tones.load_wav(path)
    assert str(caught.value) == f"cannot read sound file '{path}': no such file"


def test_load_wav_of_a_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio at all\n" * 40)
    with pytest.raises(AudioError) as caught:
        tones.load_wav(str(path))
    assert str(caught.value) == f"cannot read sound file '{path}': format not recognised"


def test_load_wav_of_a_folder_or_an_empty_wav(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as caught:
        tones.load_wav(tmp_path)
    assert str(caught.value) == f"cannot read sound file '{tmp_path}': it is a directory"
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioError) as caught:
        tones.load_wav(empty)
    assert str(caught.value) == f"cannot read sound file '{empty}': it holds no audio"


def test_load_wav_mixes_stereo_44100_to_mono_22050(tmp_path: Path) -> None:
    time_s = np.arange(44100 // 2) / 44100
    left = 0.6 * np.sin(2 * np.pi * 1000 * time_s)
    path = tmp_path / "mine.wav"
    sf.write(path, np.column_stack((left, 0.5 * left)), 44100, subtype="FLOAT")
    samples = tones.load_wav(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == SAMPLE_RATE // 2
    middle = samples[1000:-1000].astype(np.float64)
    assert np.max(np.abs(middle)) == pytest.approx(0.45, abs=0.01)  # mean of the channels
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(middle) == pytest.approx(1000, abs=3)


def test_load_wav_at_the_session_rate_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "mine.wav"
    sf.write(path, tones.generate("rest"), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(tones.load_wav(path), tones.generate("rest"))


def test_load_wav_clips_to_full_scale(tmp_path: Path) -> None:
    path = tmp_path / "hot.wav"
    sf.write(path, np.array([0.0, 1.5, -2.0, 0.5], np.float32), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(tones.load_wav(path), [0.0, 1.0, -1.0, 0.5])


# --- programming errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [tones.generate, tones.bundled, tones.signature, lambda k: tone_detect.matches(np.zeros(9), k)],
)
def test_unknown_kind_is_a_value_error(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match="unknown tone kind 'beep'; expected one of hold_start"):
        call("beep")
