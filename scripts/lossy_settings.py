"""Choose MP3's and Ogg Vorbis's settings by measurement: the lowest bitrate whose decoded
audio still does everything the WAV does.

Run by hand, with the venv's Python (a minute or two):

    .venv/bin/python scripts/lossy_settings.py                  # mid-back-knot, espeak
    .venv/bin/python scripts/lossy_settings.py --engine piper   # the neural voice

A session (mid-back-knot in its default variation, 22050 Hz) is rendered once, as
`export` renders it, then encoded at each candidate setting, mono and stereo, decoded with
libsndfile (mpg123 and libvorbis), and checked against the WAV:

- length: the decoded file holds exactly the WAV's samples;
- onsets: every tone of the timeline is found (tests/tone_detect.py's `identify`) and its
  waveform best matches at exactly its scheduled sample (the correlation search of
  tests/test_render.py, 20 ms either side): exact to the sample, not within 1 ms;
- loudness: within 0.05 LU of the WAV's (ITU-R BS.1770, pyloudnorm), the tolerance the
  tests allow lossy formats;
- peak: at most -0.5 dBFS (the renderer's ceiling is -1 dBFS; an encoder's overshoot
  above it must not come near clipping);
- bandwidth: the decoded long-term spectrum stays within 6 dB of the WAV's up to the
  frequency below which the WAV holds 99.9% of its energy (a low-pass below that is
  what a listener would hear first; the waveform SNR is printed beside it).

MP3 candidates are LAME VBR qualities V9 (smallest) to V2 at algorithm quality 7 (what
mp3.py uses: 3x faster than libsndfile's setting) and, for comparison, 2; Vorbis
candidates are libvorbis qualities 0.1 to 0.6 (libsndfile's compression level 1 - q;
quality 0.0 crashed libsndfile 1.2.2 here). The table gives each one's average bitrate,
encode time and result; the lowest bitrate that passes every check is chosen. A blind
listen is not part of it: a script cannot listen.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import tone_detect  # noqa: E402
from voicecoach import mp3, tones  # noqa: E402
from voicecoach.audiofile import _to_pcm16  # noqa: E402
from voicecoach.pipeline import open_session  # noqa: E402
from voicecoach.spec import SessionSpec, VoiceSettings  # noqa: E402

LOUDNESS_TOLERANCE_LU = 0.05
PEAK_LIMIT_DBFS = -0.5
SEARCH_MS = 20


@dataclass
class Result:
    name: str
    channels: int
    kbps: float
    encode_s: float
    failures: list[str]
    bandwidth_hz: float = 0.0
    snr_db: float = 0.0


def render(routine: str, engine: str) -> tuple[npt.NDArray[np.float32], list[tuple[str, int]], int]:
    session = open_session(SessionSpec(routine, voice=VoiceSettings(engine=engine)))  # type: ignore[arg-type]
    samples = np.concatenate(list(session.rendering.chunks()))
    pcm = _to_pcm16(samples).astype(np.float32) / 32768  # what the WAV holds
    tone_events = [(e.value, e.start) for e in session.timeline.events if e.kind == "tone"]
    return pcm, tone_events, session.timeline.sample_rate


def onset(samples: npt.NDArray[np.float32], around: int, kind: str, rate: int) -> int:
    template = tones.generate(kind)
    search = SEARCH_MS * rate // 1000
    lo = max(0, around - search)
    window = samples[lo:around + search + template.size]
    return lo + int(np.argmax(np.correlate(window, template, mode="valid")))


def check(decoded: npt.NDArray[np.float32], wav: npt.NDArray[np.float32],
          tone_events: list[tuple[str, int]], rate: int, wav_lufs: float) -> list[str]:
    failures = []
    if decoded.shape[0] != wav.shape[0]:
        return [f"length {decoded.shape[0]} != {wav.shape[0]}"]
    mono = decoded[:, 0]
    off = [(kind, at, onset(mono, at, kind, rate)) for kind, at in tone_events]
    moved = [(kind, at, found) for kind, at, found in off if found != at]
    if moved:
        kind, at, found = moved[0]
        failures.append(f"{len(moved)}/{len(off)} onsets moved (first: {kind} at {at}: "
                        f"{found - at:+d})")
    lost = [(kind, at) for kind, at in tone_events
            if tone_detect.identify(mono[at:at + rate]) != kind]
    if lost:
        failures.append(f"{len(lost)} tones not identified (first: {lost[0]})")
    lufs = pyloudnorm.Meter(rate).integrated_loudness(mono.astype(np.float64))
    if abs(lufs - wav_lufs) > LOUDNESS_TOLERANCE_LU:
        failures.append(f"loudness {lufs - wav_lufs:+.3f} LU")
    peak_db = 20 * np.log10(np.max(np.abs(decoded)))
    if peak_db > PEAK_LIMIT_DBFS:
        failures.append(f"peak {peak_db:.2f} dBFS")
    return failures


def encode_mp3(pcm: npt.NDArray[np.int16], rate: int, channels: int,
               settings: mp3.Mp3Settings) -> bytes:
    out = io.BytesIO()
    stream = mp3.Mp3Stream(out, rate, channels, settings)
    for start in range(0, len(pcm), 8192):
        stream.write(pcm[start:start + 8192])
    stream.close()
    return out.getvalue()


def encode_vorbis(wav: npt.NDArray[np.float32], rate: int, channels: int, quality: float,
                  folder: Path) -> bytes:
    path = folder / "candidate.ogg"
    # in chunks, as export writes: libsndfile 1.2.2 crashes on one 9-minute Vorbis write
    with sf.SoundFile(path, "w", rate, channels, format="OGG", subtype="VORBIS",
                      compression_level=1 - quality) as out:
        for start in range(0, len(wav), 8192):
            part = wav[start:start + 8192]
            out.write(part if channels == 1 else np.column_stack((part, part)))
    return path.read_bytes()


def bandwidth_hz(decoded: npt.NDArray[np.float32], wav: npt.NDArray[np.float32],
                 rate: int) -> tuple[float, float]:
    """How far up the decoded audio keeps the WAV's long-term spectrum (within 6 dB, over
    the bins within 60 dB of the WAV's strongest), and below which frequency the WAV has
    99.9% of its energy."""
    from scipy.signal import welch

    freqs, wav_psd = welch(wav, rate, nperseg=2048)
    _, decoded_psd = welch(decoded, rate, nperseg=2048)
    relevant = wav_psd > wav_psd.max() * 1e-6
    lost = np.flatnonzero(relevant & (decoded_psd < wav_psd / 4))
    kept = float(freqs[lost[0]]) if lost.size else float(freqs[-1])
    energy = np.cumsum(wav_psd) / wav_psd.sum()
    return kept, float(freqs[np.searchsorted(energy, 0.999)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routine", default="mid-back-knot")
    parser.add_argument("--engine", default="espeak", choices=["espeak", "piper"])
    args = parser.parse_args()
    wav, tone_events, rate = render(args.routine, args.engine)
    pcm = _to_pcm16(wav)
    seconds = len(wav) / rate
    wav_lufs = pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64))
    print(f"{args.routine} ({args.engine}): {seconds:.1f} s, {len(tone_events)} tones, "
          f"{wav_lufs:.3f} LUFS", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for channels in (1, 2):
            candidates: list[tuple[str, object]] = []
            for quality in (7, 2):
                for vbr in range(9, 1, -1):
                    candidates.append((f"MP3 V{vbr} q{quality}", mp3.Mp3Settings(vbr, quality)))
            for vorbis in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
                candidates.append((f"Vorbis q{vorbis:.1f}", vorbis))
            for name, setting in candidates:
                started = time.perf_counter()
                if isinstance(setting, mp3.Mp3Settings):
                    data, suffix = encode_mp3(pcm, rate, channels, setting), ".mp3"
                else:
                    data, suffix = encode_vorbis(wav, rate, channels, float(setting),  # type: ignore[arg-type]
                                                 folder), ".ogg"
                took = time.perf_counter() - started
                path = folder / f"decode{suffix}"
                path.write_bytes(data)
                decoded, _ = sf.read(path, dtype="float32", always_2d=True)
                failures = check(decoded, wav, tone_events, rate, wav_lufs)
                result = Result(name, channels, len(data) * 8 / seconds / 1000, took, failures)
                if decoded.shape[0] == wav.shape[0]:
                    mono = decoded[:, 0]
                    result.bandwidth_hz, wav_99 = bandwidth_hz(mono, wav, rate)
                    if result.bandwidth_hz < wav_99:
                        failures.append(f"bandwidth {result.bandwidth_hz:.0f} Hz < the WAV's "
                                        f"99.9% energy, {wav_99:.0f} Hz")
                    error = np.sum((mono - wav).astype(np.float64) ** 2)
                    result.snr_db = 10 * np.log10(np.sum(wav.astype(np.float64) ** 2) / error)
                results.append(result)
                print(f"  {'mono' if channels == 1 else 'stereo':6} {name:16} "
                      f"{result.kbps:6.1f} kbps  {took:5.2f} s  "
                      f"{result.bandwidth_hz:5.0f} Hz  SNR {result.snr_db:5.1f} dB  "
                      f"{'pass' if not failures else 'FAIL: ' + '; '.join(failures)}", flush=True)
    print("\nlowest passing bitrate:")
    for family in ("MP3", "Vorbis"):
        for channels in (1, 2):
            passing = [r for r in results if r.name.startswith(family) and r.channels == channels
                       and not r.failures]
            best = min(passing, key=lambda r: r.kbps) if passing else None
            print(f"  {family:6} {'mono' if channels == 1 else 'stereo':6} "
                  + (f"{best.name} at {best.kbps:.1f} kbps" if best else "none passed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
