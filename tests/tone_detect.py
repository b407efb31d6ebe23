"""Which tone is this? A detector for the tests: they check the rendered audio holds each
tone where the timeline says, and that speech is never taken for one. Test code, kept out
of the package (voicecoach never needs to recognise its own tones).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from voicecoach import SAMPLE_RATE
from voicecoach.tones import TONE_KINDS, _check_kind, _check_rate, _generated, signature

# Identification, in two steps. By spectrum: over the tone's own length, each of the
# kind's notes must stand as a sharp peak in its own narrow band, in about the right
# proportions, holding a fair part of all the energy. Then by waveform: the window must
# correlate with the tone itself, which a voice never does even when one of its
# harmonics sits on a note for a while (its pitch and phase drift, a tone's do not).

_BAND_HALF_WIDTH_HZ: Final = 30.0
"""Holds a note's main lobe; other kinds' notes and harmonics are >= 65 Hz away."""

_RING_HZ: Final = (40.0, 90.0)
"""Distance of the neighbourhood a note's band is compared with: a tone is a sharp
peak, speech and noise are spread."""

_MIN_CONTRAST: Final = 2.0
"""Energy per Hz in each note's band must exceed its neighbourhood's this many times."""

_MIN_SHARE_RATIO: Final = 0.25
"""Each note must carry at least this part of its expected share of the notes' energy,
so one matching note is not the whole tone."""

_MIN_FRACTION_RATIO: Final = 0.1
"""The notes' bands must hold at least this part of the share they hold in the clean
tone, so a tone buried under louder speech is not claimed."""

_MAX_ONSET_ERROR_S: Final = 0.05
"""How far the window's start may be from the tone's onset, either way."""

_MIN_CORRELATION: Final = 0.28
"""Normalised correlation with the tone: 1 when clean, 0.33 or more under continuous
speech 5 LU louder than the tone, below 0.2 for speech alone (measured with espeak-ng)."""

_SILENCE_RMS: Final = 10 ** (-80 / 20)
"""Below this over the tone's length there is nothing to identify."""
_LOWEST_HZ: Final = 50.0


@dataclass(frozen=True)
class _Template:
    tone: npt.NDArray[np.float64]
    bands: tuple[slice, ...]
    rings: tuple[tuple[slice, slice], ...]
    shares: npt.NDArray[np.float64]
    fraction: float


def _power_spectrum(segment: npt.NDArray[np.float64], length: int) -> npt.NDArray[np.float64]:
    padded = np.zeros(length)
    padded[: min(len(segment), length)] = segment[:length]
    spectrum: npt.NDArray[np.float64] = np.abs(np.fft.rfft(padded, 2 * length)) ** 2
    return spectrum


def _bin_slice(low_hz: float, high_hz: float, hz_per_bin: float) -> slice:
    return slice(math.ceil(low_hz / hz_per_bin), math.floor(high_hz / hz_per_bin) + 1)


def _measure(
    power: npt.NDArray[np.float64], bands: tuple[slice, ...], lowest_bin: int
) -> tuple[npt.NDArray[np.float64], float]:
    band_energy = np.array([power[band].sum() for band in bands])
    return band_energy, float(power[lowest_bin:].sum())


@functools.cache
def _template(kind: str, sample_rate: int) -> _Template:
    tone = _generated(kind, sample_rate).astype(np.float64)
    hz_per_bin = sample_rate / (2 * len(tone))
    near_hz, far_hz = _RING_HZ
    bands, rings = [], []
    for frequency_hz in signature(kind):
        low_hz, high_hz = frequency_hz - _BAND_HALF_WIDTH_HZ, frequency_hz + _BAND_HALF_WIDTH_HZ
        bands.append(_bin_slice(low_hz, high_hz, hz_per_bin))
        rings.append(
            (
                _bin_slice(frequency_hz - far_hz, frequency_hz - near_hz, hz_per_bin),
                _bin_slice(frequency_hz + near_hz, frequency_hz + far_hz, hz_per_bin),
            )
        )
    band_energy, total = _measure(
        _power_spectrum(tone, len(tone)), tuple(bands), round(_LOWEST_HZ / hz_per_bin)
    )
    return _Template(
        tone=tone,
        bands=tuple(bands),
        rings=tuple(rings),
        shares=band_energy / band_energy.sum(),
        fraction=float(band_energy.sum()) / total,
    )


def _spectral_score(
    window: npt.NDArray[np.float64], template: _Template, sample_rate: int
) -> float | None:
    """How much the kind's notes dominate the window's spectrum (1 for the clean tone)."""
    length = len(template.tone)
    segment = window[:length]
    if np.sum(segment**2) < length * _SILENCE_RMS**2:
        return None
    power = _power_spectrum(segment, length)
    hz_per_bin = sample_rate / (2 * length)
    band_energy, total = _measure(power, template.bands, round(_LOWEST_HZ / hz_per_bin))
    notes_energy = float(band_energy.sum())
    if total <= 0.0 or notes_energy <= 0.0:
        return None
    if np.any(band_energy / notes_energy < _MIN_SHARE_RATIO * template.shares):
        return None
    for band, (below, above) in zip(template.bands, template.rings, strict=True):
        ring_density = np.concatenate((power[below], power[above])).mean()
        if power[band].mean() < _MIN_CONTRAST * ring_density:
            return None
    score = notes_energy / total / template.fraction
    return score if score >= _MIN_FRACTION_RATIO else None


def _correlation(window: npt.NDArray[np.float64], template: _Template, sample_rate: int) -> float:
    """Best normalised correlation with the tone's waveform within the onset tolerance."""
    tone = template.tone
    max_lag = round(_MAX_ONSET_ERROR_S * sample_rate)
    padded = np.zeros(len(tone) + 2 * max_lag)
    part = window[: len(tone) + max_lag]
    padded[max_lag : max_lag + len(part)] = part
    from scipy import signal

    products = signal.correlate(padded, tone, mode="valid", method="fft")
    squares = np.concatenate(([0.0], np.cumsum(padded**2)))
    energies = squares[len(tone) :] - squares[: -len(tone)]
    floor = len(tone) * _SILENCE_RMS**2
    audible = energies > floor
    if not np.any(audible):
        return 0.0
    norms = np.sqrt(energies[audible] * float(np.sum(tone**2)))
    return float(np.max(np.abs(products[audible]) / norms))


def _window(samples: npt.ArrayLike, sample_rate: int) -> npt.NDArray[np.float64]:
    _check_rate(sample_rate)
    window = np.asarray(samples, dtype=np.float64)
    if window.ndim != 1:
        raise ValueError(f"tones are found in mono samples, got shape {window.shape}")
    return window


def _match_score(window: npt.NDArray[np.float64], kind: str, sample_rate: int) -> float | None:
    template = _template(kind, sample_rate)
    score = _spectral_score(window, template, sample_rate)
    if score is None or _correlation(window, template, sample_rate) < _MIN_CORRELATION:
        return None
    return score


def matches(samples: npt.ArrayLike, kind: str, sample_rate: int = SAMPLE_RATE) -> bool:
    """Whether the window starts with this kind's tone: "is the hold_end tone here?".

    The window is read as by identify(); several kinds never match one window in
    practice, but identify() is the one that picks.
    """
    _check_kind(kind)
    return _match_score(_window(samples, sample_rate), kind, sample_rate) is not None


def identify(samples: npt.ArrayLike, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Which tone kind starts at the window's first sample, or None if none does.

    Each kind is tested against the window's first len(generate(kind)) samples, so give
    a window that covers the whole tone (one second from the onset covers every kind)
    and starts within 50 ms of the onset; anything after the tone is ignored. Level does not
    matter, and a little speech or noise over the tone is tolerated. Only the default
    tones are known: a person's own WAV is not identified.
    """
    window = _window(samples, sample_rate)
    best_kind, best_score = None, 0.0
    for kind in TONE_KINDS:
        score = _match_score(window, kind, sample_rate)
        if score is not None and score > best_score:
            best_kind, best_score = kind, score
    return best_kind
