"""A blind ABX listen of a lossy format against the WAV: the part a script cannot do.

`scripts/lossy_settings.py` chose MP3 V8 and Vorbis quality 0.4 by measurement; issue 15
also asks that a person cannot tell them from the WAV by ear, on the tones and a
sentence. This makes the listening kit and scores it:

    .venv/bin/python scripts/abx.py make abx-mp3 --format mp3        # writes the trials
    (listen: in each trial-NN folder, say whether X is A or B; write answers.txt)
    .venv/bin/python scripts/abx.py score abx-mp3                    # correct, and p

`make` exports the session twice through `voicecoach export` itself (WAV, and the lossy
format at its shipped setting), decodes the lossy file, and cuts excerpts at the
timeline's own places: each tone kind with a second around it, and spoken lines. Each
trial folder holds A.wav (one of the two), B.wav (the other) and X.wav (one of them),
all 16-bit WAV at the session's rate, so the player cannot give the answer away. Which
is which is drawn from `--seed` and kept in `.key.json` (do not open it before
scoring). `answers.txt` lists the trials, one per line: write A or B after each number.

`score` counts the right answers and gives the chance of doing at least as well by
guessing (one-sided binomial, p = 0.5 per trial). With 16 trials, 12 or more right
(p <= 0.038) means the formats can be told apart; fewer means they could not be.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

VOICECOACH = [sys.executable, "-m", "voicecoach"]
EXCERPT_PAD_S = 0.5
LINE_EXCERPTS = 4


def _export(routine: str, engine: str, path: Path) -> np.ndarray:
    subprocess.run([*VOICECOACH, "export", routine, "--engine", engine, "-o", str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    samples, _ = sf.read(path, dtype="float32")
    return np.asarray(samples)


def _excerpts(routine: str, engine: str, rate: int) -> list[tuple[str, int, int]]:
    """(what, first sample, end sample) of each tone kind and a few spoken lines."""
    shown = subprocess.run([*VOICECOACH, "show", "--json", routine, "--engine", engine],
                           check=True, capture_output=True, text=True)
    events = json.loads(shown.stdout)["events"]
    pad = round(EXCERPT_PAD_S * rate)
    cuts: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for e in events:
        if e["kind"] == "tone" and e["tone"] not in seen:
            seen.add(e["tone"])
            cuts.append((f"tone {e['tone']}", round(e["start"] * rate) - pad, round(e["end"] * rate) + pad))
    lines = [e for e in events if e["kind"] == "speech" and 2.0 <= e["end"] - e["start"] <= 6.0]
    for e in lines[:: max(1, len(lines) // LINE_EXCERPTS)][:LINE_EXCERPTS]:
        cuts.append((f"line: {e['text']}", round(e["start"] * rate) - pad, round(e["end"] * rate) + pad))
    return cuts


def make(folder: Path, fmt: str, routine: str, engine: str, trials: int, seed: int) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = _export(routine, engine, Path(tmp) / "session.wav")
        lossy = _export(routine, engine, Path(tmp) / f"session.{fmt}")
        rate = sf.info(str(Path(tmp) / "session.wav")).samplerate
        cuts = _excerpts(routine, engine, rate)
    if lossy.shape != wav.shape:
        raise SystemExit(f"the decoded {fmt} holds {lossy.shape[0]} samples, the WAV {wav.shape[0]}")
    rng = random.Random(seed)
    key = []
    with open(folder / "answers.txt", "w") as answers:
        answers.write("# Is X the same as A or as B? Write A or B after each number.\n")
        for n in range(1, trials + 1):
            what, a, b = cuts[(n - 1) % len(cuts)]
            a, b = max(0, a), min(wav.shape[0], b)
            lossy_is_a = rng.random() < 0.5
            x_is_a = rng.random() < 0.5
            pair = (lossy[a:b], wav[a:b]) if lossy_is_a else (wav[a:b], lossy[a:b])
            trial = folder / f"trial-{n:02d}"
            trial.mkdir()
            sf.write(trial / "A.wav", pair[0], rate, subtype="PCM_16")
            sf.write(trial / "B.wav", pair[1], rate, subtype="PCM_16")
            sf.write(trial / "X.wav", pair[0] if x_is_a else pair[1], rate, subtype="PCM_16")
            key.append({"trial": n, "excerpt": what, "x": "A" if x_is_a else "B",
                        "lossy": "A" if lossy_is_a else "B"})
            answers.write(f"{n}\n")
    (folder / ".key.json").write_text(json.dumps({"format": fmt, "routine": routine,
                                                  "engine": engine, "trials": key}, indent=1))
    print(f"{trials} trials in {folder}: listen, fill in {folder / 'answers.txt'}, then "
          f"`scripts/abx.py score {folder}`")


def p_at_least(correct: int, trials: int) -> float:
    """The chance of `correct` or more right answers out of `trials` by guessing."""
    return sum(math.comb(trials, k) for k in range(correct, trials + 1)) / 2 ** trials


def score(folder: Path) -> None:
    key = {t["trial"]: t["x"] for t in json.loads((folder / ".key.json").read_text())["trials"]}
    given: dict[int, str] = {}
    for number, line in enumerate((folder / "answers.txt").read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or not words[0].isdigit() or words[1].upper() not in ("A", "B"):
            raise SystemExit(f"{folder / 'answers.txt'}:{number}: expected a trial number and A or B")
        given[int(words[0])] = words[1].upper()
    missing = sorted(set(key) - set(given))
    if missing:
        raise SystemExit(f"{folder / 'answers.txt'}: no answer for trial {', '.join(map(str, missing))}")
    correct = sum(given[n] == x for n, x in key.items())
    p = p_at_least(correct, len(key))
    verdict = "told apart" if p <= 0.05 else "not told apart"
    print(f"{correct} of {len(key)} right; p = {p:.3f} by guessing: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the trials")
    m.add_argument("folder", type=Path)
    m.add_argument("--format", choices=["mp3", "ogg"], default="mp3")
    m.add_argument("--routine", default="mid-back-knot")
    m.add_argument("--engine", choices=["espeak", "piper"], default="piper")
    m.add_argument("--trials", type=int, default=16)
    m.add_argument("--seed", type=int, default=None, help="default: a fresh one")
    s = sub.add_parser("score", help="score answers.txt against the key")
    s.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
        make(args.folder, args.format, args.routine, args.engine, args.trials, seed)
    else:
        score(args.folder)


if __name__ == "__main__":
    main()
