"""Memory and speed of music under the voice, for a one-hour session (run by hand).

    .venv/bin/python scripts/bench_music.py [--minutes 75]

Makes, in a temporary folder, a routine of about an hour of holds and a long track (a
chord progression with a little noise, `--minutes` long, encoded to MP3 in blocks) and a
6-second track to loop, then exports, each in its own process, side by side in one run:

- the hour without music, with the long track, with the looped short one;
- a ten-minute session with the long track, against which the hour's peak memory is set
  (flat memory: the ratio stays near 1).

Prints wall time, CPU time and peak RSS for each; then, in this process, the long track's
measurement (its loudness and peak, worked out before its first sample plays) cold and
read back from the cache, and how soon a streamed hour hands on its first chunk with
and without the long track.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

RATE = 44100
VOICECOACH = [sys.executable, "-m", "voicecoach"]


def long_track(path: Path, minutes: float) -> None:
    chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6),
              (196.0, 246.9, 293.7)]
    rng = np.random.default_rng(1)
    block = RATE * 2
    with soundfile.SoundFile(path, "w", RATE, 2, format="MP3") as f:
        for i in range(int(minutes * 60 / 2)):
            t = (np.arange(block) + i * block) / RATE
            x = sum(0.18 * np.cos(2 * np.pi * hz * t) for hz in chords[i % 4])
            x = x + 0.02 * rng.standard_normal(block)
            f.write(np.stack([x, 0.9 * x], axis=1).astype(np.float32))


def routine(path: Path, steps: int) -> None:
    lines = ["title: Bench hour", "steps:"]
    for i in range(steps):
        lines += [f"  - name: Stretch {i + 1}", "    say: [Breathe and hold.]", "    hold: 170",
                  "    during:", "      - halfway: Halfway.", "      - countdown: 3"]
    path.write_text("\n".join(lines) + "\n")


def measure(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=75.0, help="length of the long track")
    options = parser.parse_args()
    os.environ.setdefault("VOICECOACH_ENGINE", "espeak")
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        os.environ["VOICECOACH_CACHE_DIR"] = str(folder / "cache")
        track, short = folder / "long.mp3", folder / "short.ogg"
        started = time.perf_counter()
        long_track(track, options.minutes)
        print(f"made a {options.minutes:g}-minute MP3 ({track.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.0f} s")
        t = np.arange(6 * RATE) / RATE
        soundfile.write(short, (0.5 * np.cos(2 * np.pi * 220 * t)).astype(np.float32), RATE)
        hour, ten = folder / "hour.yaml", folder / "ten.yaml"
        routine(hour, 20)
        routine(ten, 3)
        out = str(folder / "out.wav")
        subprocess.run([*VOICECOACH, "export", str(hour), "-o", out], check=True,
                       capture_output=True)  # the phrases, made once for every run below
        runs = [
            ("hour, no music", [str(hour)]),
            ("hour, long MP3", [str(hour), "--music", str(track)]),
            ("hour, 6 s OGG looped", [str(hour), "--music", str(short)]),
            ("ten minutes, long MP3", [str(ten), "--music", str(track)]),
        ]
        results = {}
        print(f"{'export (WAV)':<24} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9}")
        for label, args in runs:
            wall, cpu, rss = measure([*VOICECOACH, "export", *args, "-o", out])
            results[label] = rss
            print(f"{label:<24} {wall:>7.1f} {cpu:>7.1f} {rss:>9.1f}")
        print(f"peak memory, hour / ten minutes with the long track: "
              f"{results['hour, long MP3'] / results['ten minutes, long MP3']:.2f}x")
        from voicecoach.music import find_tracks
        from voicecoach.music import measure as measure_track
        from voicecoach.pipeline import prepare
        from voicecoach.spec import MusicSettings

        found = find_tracks(track)[0]
        store = folder / "store"
        for state in ("cold", "warm"):
            started = time.perf_counter()
            measure_track(found, 22050, store)
            print(f"measuring the {options.minutes:g}-minute track ({state}, "
                  f"{'measured' if state == 'cold' else 'read back from the cache'}): "
                  f"{time.perf_counter() - started:.2f} s")
        for label, settings in (("no music", None), ("the long MP3", MusicSettings(str(track)))):
            started = time.perf_counter()
            session = prepare(str(hour), music=settings, stream=True)
            next(session.rendering.chunks())
            print(f"the hour streamed, {label} (warm): first chunk after "
                  f"{time.perf_counter() - started:.2f} s")
        print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
