"""Tone prompts: short chimes that mark the moments of a session.

Each kind must be recognisable by ear without looking, and by spectrum without
listening (tests of exported audio find tones with `identify`). So every kind has
its own set of note frequencies, chosen so that no kind's notes fall within 65 Hz of
another kind's notes or of their 2nd and 3rd harmonics:

    hold_start  rising fifth, A5 -> E6 (880, 1318.51 Hz), 0.44 s
    hold_end    falling third, F5 -> C#5 (698.46, 554.37 Hz), 0.44 s
    switch      double blip on F#6 (1479.98 Hz), 0.24 s
    countdown   short high tick on C#7 (2217.46 Hz), 0.08 s
    rest        soft low G#3 (207.65 Hz) swelling in and out, 0.70 s
    finish      rising G major arpeggio (783.99, 987.77, 1174.66, 1567.98 Hz), 1.00 s

Levels: a tone marks a moment but must not shout over the coach, whose voice is
normalised to about -19 LUFS. Every tone is scaled to TARGET_LUFS (-21 LUFS, 2 LU
under the voice) as measured by pyloudnorm (BS.1770 integrated loudness), a tone
shorter than 0.4 s being padded with trailing silence to one 400 ms gating block.
For the short tones that is their EBU R128 momentary loudness: their energy is
spread over 400 ms, about the span over which the ear adds up a brief sound, so a tick is
not pushed up to the level of a sustained tone. The gain is also capped so the peak
stays at or below PEAK_CEILING_DBFS (-3 dBFS), leaving headroom for mixing over
speech; with the shapes below the cap never binds (peaks are -15 to -7 dBFS).

All durations are whole multiples of 20 ms, so a tone is a whole number of samples at
22050, 44100 and 48000 Hz: len(generate(kind)) == round(TONE_SECONDS[kind] * rate).
"""

from __future__ import annotations

import functools
import io
import math
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile

from voicecoach import SAMPLE_RATE
from voicecoach.errors import AudioError
from voicecoach import schema
from voicecoach.loudness import TONE_LUFS, TONE_PEAK_DBFS, integrated_loudness
from voicecoach.stops import shielded

Samples = npt.NDArray[np.float32]

TONE_KINDS: Final = schema.TONE_KINDS
"""The routine format names them (a routine's own `sounds:`), so the schema owns the list."""

TARGET_LUFS: Final = TONE_LUFS
"""Loudness of every tone (loudness.py keeps every level)."""

PEAK_CEILING_DBFS: Final = TONE_PEAK_DBFS

MIN_FADE_S: Final = 0.005
"""Shortest raised-cosine fade at the start and end of every note: no clicks."""

_MAX_PARTIAL_HZ: Final = 4800.0
"""Harmonics above this are left out: every tone stays below 5 kHz."""

_LOUDNESS_WINDOW_S: Final = 0.4
"""BS.1770 gating block; shorter tones are padded to it for measuring."""

_CHIME_HARMONICS: Final = (1.0, 0.3, 0.1)
_BLIP_HARMONICS: Final = (1.0, 0.25, 0.08)
_TICK_HARMONICS: Final = (1.0, 0.15)
_REST_HARMONICS: Final = (1.0, 0.35, 0.15)


@dataclass(frozen=True)
class _Note:
    """One note of a tone; times in seconds from the tone's onset."""

    frequency_hz: float
    onset_s: float
    duration_s: float
    decay_s: float | None
    """Time constant of the exponential decay (a struck chime); None holds steady."""
    fade_in_s: float = MIN_FADE_S
    fade_out_s: float = 0.03
    harmonics: tuple[float, ...] = _CHIME_HARMONICS
    """Amplitudes of the 1st, 2nd, 3rd... partials: soft overtones, not a test sine."""


@dataclass(frozen=True)
class _ToneSpec:
    duration_s: float
    notes: tuple[_Note, ...]


def _chime(frequency_hz: float, onset_s: float, duration_s: float, decay_s: float) -> _Note:
    return _Note(frequency_hz, onset_s, duration_s, decay_s, fade_out_s=0.04)


def _blip(onset_s: float) -> _Note:
    return _Note(1479.98, onset_s, 0.09, 0.08, fade_out_s=0.015, harmonics=_BLIP_HARMONICS)


_SPECS: Final[Mapping[str, _ToneSpec]] = MappingProxyType(
    {
        "hold_start": _ToneSpec(
            0.44, (_chime(880.0, 0.0, 0.26, 0.12), _chime(1318.51, 0.14, 0.30, 0.14))
        ),
        "hold_end": _ToneSpec(
            0.44, (_chime(698.46, 0.0, 0.26, 0.12), _chime(554.37, 0.14, 0.30, 0.14))
        ),
        "switch": _ToneSpec(0.24, (_blip(0.0), _blip(0.15))),
        "countdown": _ToneSpec(
            0.08,
            (_Note(2217.46, 0.0, 0.08, 0.03, fade_out_s=0.02, harmonics=_TICK_HARMONICS),),
        ),
        "rest": _ToneSpec(
            0.70,
            (
                _Note(
                    207.65,
                    0.0,
                    0.70,
                    None,
                    fade_in_s=0.08,
                    fade_out_s=0.30,
                    harmonics=_REST_HARMONICS,
                ),
            ),
        ),
        "finish": _ToneSpec(
            1.00,
            (
                _chime(783.99, 0.00, 0.40, 0.15),
                _chime(987.77, 0.12, 0.40, 0.15),
                _chime(1174.66, 0.24, 0.40, 0.15),
                _Note(1567.98, 0.36, 0.64, 0.25, fade_out_s=0.10),
            ),
        ),
    }
)

TONE_SECONDS: Final[Mapping[str, float]] = MappingProxyType(
    {kind: spec.duration_s for kind, spec in _SPECS.items()}
)
"""Each tone's length; the exact length in samples is len(generate(kind, rate))."""


def _check_kind(kind: str) -> _ToneSpec:
    """Unknown kinds are programming errors: routines are validated before this."""
    try:
        return _SPECS[kind]
    except KeyError:
        raise ValueError(
            f"unknown tone kind {kind!r}; expected one of {', '.join(TONE_KINDS)}"
        ) from None


def _check_rate(sample_rate: int) -> None:
    if sample_rate < 2 * 5000:
        raise ValueError(f"sample rate {sample_rate} Hz is too low for tones up to 5 kHz")


def signature(kind: str) -> tuple[float, ...]:
    """The kind's note frequencies in Hz, in the order they sound; no two kinds share one."""
    spec = _check_kind(kind)
    return tuple(dict.fromkeys(note.frequency_hz for note in spec.notes))


def _fade(length: int) -> npt.NDArray[np.float64]:
    """Raised-cosine ramp from exactly 0 at index 0 towards 1."""
    return np.sin(0.5 * np.pi * np.arange(length) / length) ** 2


def _render_note(note: _Note, sample_rate: int) -> npt.NDArray[np.float64]:
    length = round(note.duration_s * sample_rate)
    time_s = np.arange(length) / sample_rate
    wave = np.zeros(length)
    for number, amplitude in enumerate(note.harmonics, start=1):
        partial_hz = note.frequency_hz * number
        if partial_hz < min(_MAX_PARTIAL_HZ, 0.45 * sample_rate):
            wave += amplitude * np.sin(2 * np.pi * partial_hz * time_s)
    envelope = np.ones(length)
    if note.decay_s is not None:
        envelope *= np.exp(-time_s / note.decay_s)
    fade_in = _fade(round(note.fade_in_s * sample_rate))
    fade_out = _fade(round(note.fade_out_s * sample_rate) + 1)[::-1]
    envelope[: len(fade_in)] *= fade_in
    envelope[length - len(fade_out) :] *= fade_out
    return wave * envelope


def _loudness_lufs(samples: npt.NDArray[np.floating], sample_rate: int) -> float:
    """BS.1770 loudness, short sounds padded with silence to one 400 ms block."""
    min_length = math.ceil(_LOUDNESS_WINDOW_S * sample_rate)
    padded = np.zeros(max(len(samples), min_length))
    padded[: len(samples)] = samples
    return integrated_loudness(padded, sample_rate)


@functools.cache
def _generated(kind: str, sample_rate: int) -> Samples:
    spec = _SPECS[kind]
    buffer = np.zeros(round(spec.duration_s * sample_rate))
    for note in spec.notes:
        start = round(note.onset_s * sample_rate)
        rendered = _render_note(note, sample_rate)
        buffer[start : start + len(rendered)] += rendered
    loudness_gain = 10 ** ((TARGET_LUFS - _loudness_lufs(buffer, sample_rate)) / 20)
    peak_gain = 10 ** (PEAK_CEILING_DBFS / 20) / float(np.max(np.abs(buffer)))
    samples = (buffer * min(loudness_gain, peak_gain)).astype(np.float32)
    samples.flags.writeable = False
    return samples


def generate(kind: str, sample_rate: int = SAMPLE_RATE) -> Samples:
    """The tone made from code: the default, and the source of the shipped WAVs.

    Returns a read-only float32 mono array (cached; copy it to change it).
    """
    _check_kind(kind)
    _check_rate(sample_rate)
    return _generated(kind, sample_rate)


def _cannot_read(name: str, reason: str) -> AudioError:
    return AudioError(f"cannot read sound file '{name}': {reason}")


def _decode(source: io.BytesIO, name: str, sample_rate: int) -> Samples:
    """Decode any format libsndfile reads, mix to mono, resample, clip to [-1, 1]."""
    try:
        with shielded():  # libsndfile reads the bytes through Python callbacks
            data, file_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        reason = error.error_string.strip().rstrip(".")
        raise _cannot_read(name, reason[:1].lower() + reason[1:]) from None
    except (RuntimeError, OSError) as error:
        raise _cannot_read(name, str(error)) from None
    if data.shape[0] == 0:
        raise _cannot_read(name, "it holds no audio")
    if not np.all(np.isfinite(data)):
        raise _cannot_read(name, "it holds samples that are not numbers")
    mono: npt.NDArray[np.float64] = data.mean(axis=1, dtype=np.float64)
    if file_rate != sample_rate:
        common = math.gcd(int(file_rate), sample_rate)
        from scipy import signal

        mono = signal.resample_poly(mono, sample_rate // common, int(file_rate) // common)
    return np.clip(mono, -1.0, 1.0).astype(np.float32)


MAX_SOUND_BYTES: Final = 16 * 1024 * 1024
MAX_SOUND_S: Final = 10.0
"""A tone marks a moment; ten seconds is already long for one."""
SOUND_RATES_HZ: Final = (8000, 192000)


def load_wav(path: pathlib.Path | str, sample_rate: int = SAMPLE_RATE) -> Samples:
    """A person's own tone: any sound file libsndfile reads, as float32 mono at sample_rate.

    A missing or unreadable file is the person's to fix, so it raises AudioError
    naming the file and the reason, never a traceback. Only a regular file is read, at
    most MAX_SOUND_BYTES of it, and its rate and length are checked before decoding, so
    /dev/zero, a FIFO or a day-long file fail at once instead of filling memory.
    """
    _check_rate(sample_rate)
    name = str(path)
    from .inputs import read_regular

    content = read_regular(pathlib.Path(path), MAX_SOUND_BYTES, _cannot_read)
    try:
        with shielded():
            info = soundfile.info(io.BytesIO(content))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        info = None  # _decode says what is wrong with it
    if info is not None:
        low, high = SOUND_RATES_HZ
        if not low <= info.samplerate <= high:
            raise _cannot_read(name, f"its sample rate is {info.samplerate} Hz; expected "
                                     f"{low} to {high} Hz")
        if info.frames > MAX_SOUND_S * info.samplerate:
            raise _cannot_read(name, f"it lasts {info.frames / info.samplerate:.1f} s; a tone may "
                                     f"last at most {MAX_SOUND_S:g} s")
    return _decode(io.BytesIO(content), name, sample_rate)


def _bundled_bytes(kind: str) -> bytes:
    """The shipped WAV's bytes, from the installed package or a source checkout."""
    file_name = f"{kind}.wav"
    try:
        resource = resources.files("voicecoach.sounds").joinpath(file_name)
    except ModuleNotFoundError:
        # Running from a source checkout (PYTHONPATH, no install): pyproject maps the
        # top-level sounds/ folder to voicecoach.sounds only when installed.
        resource = pathlib.Path(__file__).resolve().parent.parent / "sounds" / file_name
    try:
        return resource.read_bytes()
    except OSError:
        raise _cannot_read(f"voicecoach/sounds/{file_name}", "no such file") from None


@functools.cache
def _bundled(kind: str, sample_rate: int) -> Samples:
    samples = _decode(
        io.BytesIO(_bundled_bytes(kind)), f"voicecoach/sounds/{kind}.wav", sample_rate
    )
    samples.flags.writeable = False
    return samples


def bundled(kind: str, sample_rate: int = SAMPLE_RATE) -> Samples:
    """The shipped WAV of a kind (made from generate() by scripts/make_sounds.py).

    Returns a read-only float32 mono array (cached; copy it to change it).
    """
    _check_kind(kind)
    _check_rate(sample_rate)
    return _bundled(kind, sample_rate)
