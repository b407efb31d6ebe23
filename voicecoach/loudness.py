"""Loudness (ITU-R BS.1770: K-weighting, 400 ms blocks, gating) and a peak limiter.

pyloudnorm is the reference implementation and the tests measure with it, but it
measures whole arrays only and imports scipy.signal, which alone took a second of a
cold export here. This meter streams in flat memory and needs only numpy: the two
K-weighting biquads (pyloudnorm's coefficients, RBJ cookbook) are applied as their
impulse response, truncated where it has decayed below 1e-10, by FFT convolution with
overlap-add in float32 blocks of a fixed size (measured fastest here: 13 ns a sample,
against 57 for one power-of-two FFT over the whole input).

`bin_energies` gives a sound's K-weighted energy in 5-sample bins, tail included. K-weighting
is linear, so a session whose sounds do not overlap has the sum of its sounds' bins as
its own: render.py measures a session's loudness from them, with no pass over the audio.
"""

from __future__ import annotations

import functools

import numpy as np

IMPULSE_SAMPLES = 2048
"""The K-weighting response is below 1e-10 of its peak from here on (at 22050 Hz)."""
FFT_SIZE = 16384
# Every level voicecoach sets, in one place.
TARGET_LUFS_MONO = -19.0
"""A session, spoken word in mono; the same audio in two channels measures 3 LU louder: -16 LUFS."""
PEAK_CEILING_DBFS = -1.0
"""No sample of a session above this."""
SPEECH_LUFS = -19.0
"""Each phrase, levelled when it is made."""
SPEECH_PEAK_DBFS = -2.5
"""Each phrase's peaks, limited when it is made, leaving room to mix over a tone."""
TONE_LUFS = -21.0
"""Every tone: 2 LU under the voice, heard but not shouting."""
TONE_PEAK_DBFS = -3.0
"""No tone peaks above this, so a tone mixed over speech keeps headroom."""
SESSION_GAIN_DB = 0.2
"""The one gain on a session of levelled phrases and tones, a constant so that play can
start before the last phrase is made (a session's loudness depends on where all its words
fall). Phrases are levelled in context (speech.CONTEXT_SAMPLES), so a session of them
measures close to their own level; its tones, 2 LU under the voice, and its countdown
ticks pull it a little lower. Measured over the bundled sessions with espeak-ng, every
variation and level, with and without --reps 2 and --hold 12: -19.02 to -19.38 LUFS
before this gain, which puts the middle of that on the target, each within 0.2 LU of it
(the same sessions levelled one gain each from every phrase would need all of them made
before the first sound: 1.3 s with espeak-ng, 13.9 s with Piper, for upper-back-knot)."""

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BINS_PER_STEP = 441
"""A gating step is 100 ms, so a bin is 5 samples at 22050 Hz: fine enough that laying a
sound's bins at any sample gives the loudness of its samples to 1e-5 LU (measured: 21
samples moved a gating block across its threshold, 0.005 LU)."""


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
    n = 1 << 14  # frequency points: what wraps around in time is below 1e-30
    z = np.exp(-1j * np.linspace(0, np.pi, n // 2 + 1))
    response = np.ones_like(z)
    for b, a in (_biquad("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0, rate),
                 _biquad("high_pass", 0.0, 0.5, 38.0, rate)):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    impulse = np.fft.irfft(response, n)[:IMPULSE_SAMPLES]
    impulse.flags.writeable = False
    return impulse


@functools.lru_cache(maxsize=4)
def _impulse_spectrum(rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(k_weighting(rate).astype(np.float32), FFT_SIZE)
    spectrum.flags.writeable = False
    return spectrum


def k_filter(samples: np.ndarray, rate: int, length: int = 0) -> np.ndarray:
    """The K-weighted signal, float32, with the filter's tail: len + IMPULSE_SAMPLES - 1
    samples, zero-padded to `length` if that is longer."""
    spectrum = _impulse_spectrum(rate)
    block = FFT_SIZE - IMPULSE_SAMPLES + 1
    n = samples.shape[0]
    out = np.zeros(max(length, n + IMPULSE_SAMPLES - 1), np.float32)
    x = np.asarray(samples, dtype=np.float32)
    for a in range(0, n, block):
        piece = x[a: a + block]
        if not piece.any():
            continue
        filtered = np.fft.irfft(np.fft.rfft(piece, FFT_SIZE) * spectrum, FFT_SIZE)
        m = piece.shape[0] + IMPULSE_SAMPLES - 1
        out[a: a + m] += filtered[:m]
    return out


def step_samples(rate: int) -> int:
    """Samples in a 100 ms gating step."""
    return round(0.1 * rate)


def bin_samples(rate: int) -> int:
    """Samples in a bin: BINS_PER_STEP bins of whole samples make a step."""
    step = step_samples(rate)
    if step % BINS_PER_STEP:
        raise ValueError(f"a 100 ms step at {rate} Hz is not {BINS_PER_STEP} whole bins")
    return step // BINS_PER_STEP


def bin_energies(samples: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted energy (sum of squares) per bin from the sound's first sample, tail
    included; float32, a fifth of the sound's own size."""
    bin_size = bin_samples(rate)
    bins = -(-(samples.shape[0] + IMPULSE_SAMPLES - 1) // bin_size)
    filtered = k_filter(samples, rate, bins * bin_size).reshape(bins, bin_size)
    energies: np.ndarray = np.einsum("ij,ij->i", filtered, filtered)
    return energies


def sound_summary(samples: np.ndarray, rate: int) -> np.ndarray:
    """What a session's loudness and peak are worked out from, one float64 array: the
    sound's peak, then the running sum of its bin energies from 0 (one more than bins)."""
    energies = bin_energies(samples, rate)
    summary = np.zeros(energies.shape[0] + 2)
    summary[0] = max(float(np.max(samples)), -float(np.min(samples))) if samples.size else 0.0
    np.cumsum(energies, dtype=np.float64, out=summary[2:])
    return summary


def gated_loudness(step_energies: np.ndarray, step: int) -> float:
    """Integrated loudness in LUFS from energies per 100 ms step, gated as BS.1770 (and
    pyloudnorm) do; -inf for silence."""
    e = np.asarray(step_energies, dtype=np.float64)
    if e.size < 4:
        return float("-inf")
    z = (e[:-3] + e[1:-2] + e[2:-1] + e[3:]) / (4 * step)
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(z)
    above = loud >= ABSOLUTE_GATE_LUFS
    if not above.any():
        return float("-inf")
    relative = -0.691 + 10 * np.log10(z[above].mean()) + RELATIVE_GATE_LU
    final = z[above & (loud > relative)]
    return float(-0.691 + 10 * np.log10(final.mean())) if final.size else float("-inf")


class LoudnessMeter:
    """Integrated loudness of a mono stream fed in chunks, keeping one energy per 100 ms."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._tail = np.zeros(IMPULSE_SAMPLES - 1)
        self._step = step_samples(rate)
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
        full = k_filter(chunk, self._rate).astype(np.float64)
        full[: self._tail.size] += self._tail
        out, tail = full[:n], full[n:]
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

    def step_energies(self) -> np.ndarray:
        """The K-weighted energy of each whole 100 ms step fed so far."""
        return np.array(self._energies)

    def integrated(self) -> float:
        """LUFS, gated as BS.1770 (and pyloudnorm) do; -inf for silence."""
        return gated_loudness(np.array(self._energies), self._step)


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    meter = LoudnessMeter(rate)
    meter.feed(samples)
    return meter.integrated()


def steps_from_bins(bins: np.ndarray, minimum_steps: int = 4) -> np.ndarray:
    """Bin energies summed per 100 ms step, zero-padded to whole steps (and to one block)."""
    count = max(minimum_steps * BINS_PER_STEP, -(-bins.shape[0] // BINS_PER_STEP) * BINS_PER_STEP)
    padded = np.zeros(count)
    padded[: bins.shape[0]] = bins
    steps: np.ndarray = padded.reshape(-1, BINS_PER_STEP).sum(axis=1)
    return steps


def _sliding_min(x: np.ndarray, k: int) -> np.ndarray:
    """min(x[i:i+k]) for every i (van Herk / Gil-Werman: a few passes, whatever k is)."""
    n = x.shape[0]
    padded = np.concatenate([x, np.full(-n % k, np.inf)]).reshape(-1, k)
    prefix = np.minimum.accumulate(padded, axis=1).ravel()
    suffix = np.minimum.accumulate(padded[:, ::-1], axis=1)[:, ::-1].ravel()
    out: np.ndarray = np.minimum(suffix[: n - k + 1], prefix[k - 1: n])
    return out


def limit(samples: np.ndarray, ceiling: float, window: int) -> np.ndarray:
    """A look-ahead peak limiter: smooth gain dips around the few samples over `ceiling`.

    The dip reaches its floor `window` samples before a peak and recovers as long
    after, so the peak is held under the ceiling with no hard clipping. Only the
    regions around peaks are touched (and copied); elsewhere samples pass as they are.
    """
    over = np.flatnonzero((samples > ceiling) | (samples < -ceiling))
    if over.size == 0:
        return samples
    n = samples.shape[0]
    w = window
    hann = np.hanning(w + 2)[1:-1]
    kernel = hann / hann.sum()
    out = np.array(samples, copy=True)
    # Peaks closer than 4 windows share one region, so their dips never compound.
    breaks = np.flatnonzero(np.diff(over) > 4 * w + 1) + 1
    for region in np.split(over, breaks):
        lo, hi = max(0, int(region[0]) - 2 * w), min(n, int(region[-1]) + 2 * w + 1)
        need = np.ones(hi - lo + 2 * w)  # sample i sits at need[i - lo + w]
        need[region - lo + w] = ceiling / np.abs(samples[region].astype(np.float64))
        floor = _sliding_min(need, 2 * w + 1)
        dip = np.convolve(np.pad(floor, w, constant_values=1.0), kernel, mode="same")[w:-w]
        dip[dip > 1.0 - 1e-9] = 1.0
        out[lo:hi] = np.clip(out[lo:hi] * dip, -ceiling, ceiling)
    return out
