"""scripts/abx.py, the blind listening kit for lossy formats: its trials hide the answer
in nothing but the sound, and its score is the binomial chance of guessing as well."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
ABX = [sys.executable, str(REPO / "scripts" / "abx.py")]
SHORT = str(REPO / "tests" / "cases" / "short.yaml")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ABX, *args], capture_output=True, text=True, timeout=300)


def test_trials_hide_which_is_which_and_score_counts_right_answers(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    made = run("make", str(kit), "--format", "mp3", "--routine", SHORT, "--engine", "espeak",
               "--trials", "6", "--seed", "3")
    assert made.returncode == 0, made.stderr
    key = json.loads((kit / ".key.json").read_text())["trials"]
    assert [t["excerpt"].split(":")[0] for t in key][:5] == ["tone hold_start", "tone countdown",
                                                          "tone hold_end", "tone switch", "tone finish"]
    for t in key:
        folder = kit / f"trial-{t['trial']:02d}"
        a, b, x = (sf.read(folder / f"{n}.wav", dtype="float32")[0] for n in "ABX")
        infos = {sf.info(str(folder / f"{n}.wav")).subtype for n in "ABX"}
        assert infos == {"PCM_16"} and a.shape == b.shape == x.shape
        assert not np.array_equal(a, b)  # the lossy one differs from the WAV
        assert np.array_equal(x, a if t["x"] == "A" else b)
    answers = kit / "answers.txt"
    answers.write_text("\n".join(f"{t['trial']} {t['x']}" for t in key) + "\n")
    assert run("score", str(kit)).stdout == "6 of 6 right; p = 0.016 by guessing: told apart\n"
    answers.write_text("".join(f"{t['trial']} {'B' if t['x'] == 'A' else 'A'}\n" for t in key))
    assert run("score", str(kit)).stdout == "0 of 6 right; p = 1.000 by guessing: not told apart\n"
    answers.write_text("1 A\n2 maybe\n")
    bad = run("score", str(kit))
    assert (bad.returncode, bad.stderr) == (1, f"{answers}:2: expected a trial number and A or B\n")
