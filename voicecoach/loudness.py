"""Loudness (ITU-R BS.1770: K-weighting, 400 ms blocks, gating) and a peak limiter.

pyloudnorm is the reference implementation and the tests measure with it, but it
measures whole arrays only and imports scipy.signal, which alone took a second of a
cold export here. This meter streams in flat memory and needs only numpy: the two
K-weighting biquads (pyloudnorm's coefficients, RBJ cookbook) are applied as their
impulse response, truncated where it has decayed below 1e-12, by FFT convolution
with overlap-add.
"""

from __future__ import annotations

import functools

import numpy as np

IMPULSE_SAMPLES = 4096
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


def _biquad(kind: str, gain_db: float, q: float, fc_hz: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    a_ = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc_hz / rate
    alpha = np.sin(w0) / (2.0 * q)
    cos = np.cos(w0)
    if kind == "high_shelf":
        sq = 2 * np.sqrt(a_) * alpha
        b = [a_ * ((a_ + 1) + (a_ - 1) * cos + sq), -2 * a_ * ((a_ - 1) + (a_ + 1) * cos),
             a_ * ((a_ + 1) + (a_ - 1) * cos - sq)]
        a = [(a_ + 1) - (a_ - 1) * cos + sq, 2 * ((a_ - 1) - (a_ + 1) * cos),
             (a_ + 1) - (a_ - 1) * cos - sq]
    else:  # high pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


@functools.cache
def k_weighting(rate: int) -> np.ndarray:
    """The K-weighting filter's impulse response, from its frequency response."""
    n = 1 << 16
    z = np.exp(-1j * np.linspace(0, np.pi, n // 2 + 1))
    response = np.ones_like(z)
    for b, a in (_biquad("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0, rate),
                 _biquad("high_pass", 0.0, 0.5, 38.0, rate)):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    impulse = np.fft.irfft(response, n)[:IMPULSE_SAMPLES]
    impulse.flags.writeable = False
    return impulse


@functools.lru_cache(maxsize=16)
def _impulse_spectrum(rate: int, size: int) -> np.ndarray:
    spectrum = np.fft.rfft(k_weighting(rate), size)
    spectrum.flags.writeable = False
    return spectrum


class LoudnessMeter:
    """Integrated loudness of a mono stream fed in chunks, keeping one energy per 100 ms."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._impulse = k_weighting(rate)
        self._tail = np.zeros(self._impulse.size - 1)
        self._step = round(0.1 * rate)
        self._partial = 0.0
        self._partial_n = 0
        self._energies: list[float] = []

    def feed(self, chunk: np.ndarray) -> None:
        n = chunk.shape[0]
        if n == 0:
            return
        if not chunk.any() and not self._tail.any():
            self._add_silence(n)
            return
        size = 1 << int(np.ceil(np.log2(n + self._impulse.size - 1)))
        spectrum = np.fft.rfft(chunk.astype(np.float64), size) * _impulse_spectrum(self._rate, size)
        full = np.fft.irfft(spectrum, size)[: n + self._impulse.size - 1]
        full[: self._tail.size] += self._tail
        out, tail = full[:n], full[n:]
        tail[np.abs(tail) < 1e-15] = 0.0  # lets the silence shortcut above take over
        self._tail = tail
        self._add_squares(out * out)

    def _add_silence(self, n: int) -> None:
        if self._partial_n:
            fill = min(n, self._step - self._partial_n)
            self._add_squares(np.zeros(fill))
            n -= fill
        whole, rest = divmod(n, self._step)
        self._energies.extend([0.0] * whole)
        self._partial_n += rest

    def _add_squares(self, squares: np.ndarray) -> None:
        pos = 0
        while pos < squares.size:
            take = min(self._step - self._partial_n, squares.size - pos)
            self._partial += float(squares[pos: pos + take].sum())
            self._partial_n += take
            pos += take
            if self._partial_n == self._step:
                self._energies.append(self._partial)
                self._partial, self._partial_n = 0.0, 0

    def integrated(self) -> float:
        """LUFS, gated as BS.1770 (and pyloudnorm) do; -inf for silence."""
        e = np.array(self._energies)
        if e.size < 4:
            return float("-inf")
        z = (e[:-3] + e[1:-2] + e[2:-1] + e[3:]) / (4 * self._step)
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10 * np.log10(z)
        above = loud >= ABSOLUTE_GATE_LUFS
        if not above.any():
            return float("-inf")
        relative = -0.691 + 10 * np.log10(z[above].mean()) + RELATIVE_GATE_LU
        final = z[above & (loud > relative)]
        return float(-0.691 + 10 * np.log10(final.mean())) if final.size else float("-inf")


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    meter = LoudnessMeter(rate)
    meter.feed(samples)
    return meter.integrated()


def limit(samples: np.ndarray, ceiling: float, window: int) -> np.ndarray:
    """A look-ahead peak limiter: smooth gain dips around the few samples over `ceiling`.

    The dip reaches its floor `window` samples before a peak and recovers as long
    after, so the peak is held under the ceiling with no hard clipping.
    """
    level = np.abs(samples)
    over = np.flatnonzero(level > ceiling)
    if over.size == 0:
        return samples
    need = np.ones(samples.shape[0] + 2 * window)
    need[over + window] = ceiling / level[over]
    n = samples.shape[0]
    hann = np.hanning(window + 2)[1:-1]
    kernel = hann / hann.sum()
    smooth = np.ones(n)
    # a sliding minimum over 2 * window + 1 samples, then smoothed: only around the peaks
    breaks = np.flatnonzero(np.diff(over) > 2 * window) + 1
    for cluster in np.split(over, breaks):
        lo, hi = max(0, cluster[0] - 2 * window), min(n, cluster[-1] + 2 * window + 1)
        span = need[lo: hi + 2 * window]
        floor = np.lib.stride_tricks.sliding_window_view(span, 2 * window + 1).min(axis=1)
        padded = np.pad(floor, window, constant_values=1.0)
        dip = np.convolve(padded, kernel, mode="same")[window:-window]
        smooth[lo:hi] = np.minimum(smooth[lo:hi], dip)
    smooth[smooth > 1.0 - 1e-9] = 1.0  # away from the peaks, samples pass untouched
    out: np.ndarray = np.clip(samples * smooth, -ceiling, ceiling)
    return out
