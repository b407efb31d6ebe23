"""The ducking, measured in an exported file: the README's figure (run by hand).

    .venv/bin/python scripts/duck_figure.py

Exports the mid-back-knot routine over a chord progression (made here, encoded to OGG), takes
the music back out of the file (the file less the voice and tones at the session's gain),
and prints its level every 50 ms around the lines and tones that stand alone (quiet for
a second on both sides), averaged over them, against its level in the gaps.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_music import TRACK_RATE, chord_progression  # noqa: E402
from voicecoach import SAMPLE_RATE as SR  # noqa: E402
from voicecoach.render import Rendering  # noqa: E402

STEP_S = 0.05
ROUTINE = "mid-back-knot"


def main() -> None:
    os.environ.setdefault("VOICECOACH_ENGINE", "espeak")
    from voicecoach.cli import cli
    from voicecoach.pipeline import prepare
    from voicecoach.spec import MusicSettings

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        track, out = folder / "chords.ogg", folder / "out.wav"
        soundfile.write(track, chord_progression(), TRACK_RATE)
        cli.main(["export", ROUTINE, "--music", str(track), "-o", str(out)], standalone_mode=False)
        exported, _ = soundfile.read(out, dtype="float64")
        session = prepare(ROUTINE, music=MusicSettings(str(track)))
        r = session.rendering
        voice = Rendering(session.timeline, r.speech, r.tones).mix(0, r.total_samples)
        music = exported - voice * r.gain
    events = session.timeline.events
    alone = [b for a, b, c in zip(events, events[1:], events[2:], strict=False)
             if b.start - a.end > SR and c.start - b.end > SR]
    step = int(STEP_S * SR)

    def level(at: int) -> float:
        return float(10 * np.log10(np.mean(np.square(music[at: at + step])) + 1e-20))

    def gap(e: object) -> float:  # the 350 ms of clear music before the fall
        at = e.start - int(0.5 * SR)  # type: ignore[attr-defined]
        return float(10 * np.log10(np.mean(np.square(music[at: at + int(0.35 * SR)]))))

    print(f"{len(alone)} lines and tones alone; the music's level in the 50 ms from each time, against the gap before (dB):")
    for k in range(-6, 5):
        rows = [level(e.start + k * step) - gap(e) for e in alone]
        print(f"  line start {k * 50:+5d} ms  {np.mean(rows):6.1f}  {'#' * max(0, round(20 + np.mean(rows)))}")
    print("  ...")
    for k in range(-2, 11):
        rows = [level(e.end + k * step) - gap(e) for e in alone]
        print(f"  line end   {k * 50:+5d} ms  {np.mean(rows):6.1f}  {'#' * max(0, round(20 + np.mean(rows)))}")
    inside = [10 * np.log10(np.mean(np.square(music[e.start: e.end]))) - gap(e) for e in alone]
    print(f"over each whole line or tone: {np.mean(inside):.1f} dB (the least drop: "
          f"{-max(inside):.1f} dB)")


if __name__ == "__main__":
    main()
