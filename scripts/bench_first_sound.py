"""First sound of `play`, and a cold Piper export against a power user's script.

Run by hand (not by the tests: it times things, and the machine's load moves them):

    .venv/bin/python scripts/bench_first_sound.py [--runs 3] [--engines espeak piper] [--music PATH]
    .venv/bin/python scripts/bench_first_sound.py --export-only [--runs 3]

Measured, for each engine, runs interleaved so that load on the machine falls on all
alike (medians, with the spread):

- first sound of `voicecoach play ROUTINE --no-log` after launch, with an empty phrase
  cache (a fresh folder each run: the model load included) and with a warm one (made by
  a play, for its greeting lines, and an export), with `--baseline DIR` also for another
  version run alike, recorded
  from the monitor of a PulseAudio null sink that this script starts (tests/pulse.py);
  the session's own lead-in (0.25 s of silence before its first word) is part of it;
- (piper) a cold `voicecoach export ROUTINE -o x.wav` against the peer a power user would
  script: load the voice once, synthesize every spoken line in order, lay each at its
  start with numpy, write a WAV; wall time and peak memory (the child's max RSS) of each.

Targets (issue 14): cold first sound <= 1.5 s with piper, <= 0.5 s with espeak-ng; warm
<= 0.4 s; cold piper export <= 0.35x the peer and <= 250 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
VOICECOACH = [sys.executable, "-m", "voicecoach"]
TARGETS = {("espeak", "cold"): 0.5, ("piper", "cold"): 1.5, ("espeak", "warm"): 0.4, ("piper", "warm"): 0.4}

PEER = r'''
"""The power user's script: the voice loaded once, every line in order, laid with numpy."""
import json, sys
import numpy as np, soundfile
from piper import PiperVoice

model, timeline_path, out = sys.argv[1:4]
timeline = json.load(open(timeline_path))
rate = timeline["sample_rate"]
voice = PiperVoice.load(model)
buffer = np.zeros(round(timeline["duration"] * rate), np.float32)
for event in timeline["events"]:
    if event["kind"] != "speech":
        continue
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(event["text"])])
    start = round(event["start"] * rate)
    piece = audio[: buffer.size - start]
    buffer[start: start + piece.size] += piece
soundfile.write(out, buffer, rate)
'''


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    if proc.stderr:
        proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def first_sound(server: object, cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from launching `cmd` to its first sound in the sink's monitor (bench.py's
    measurement). Run from elsewhere: from the checkout, `python -m` would import it
    whatever PYTHONPATH says."""
    from bench import _first_sound_once

    return _first_sound_once(server, cmd, env, cwd=tempfile.gettempdir())


def summary(values: list[float], unit: str = "s") -> str:
    return f"{statistics.median(values):.3f} {unit} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--routine", default="mid-back-knot")
    parser.add_argument("--engines", nargs="+", default=["espeak", "piper"], choices=["espeak", "piper"])
    parser.add_argument("--no-export", action="store_true", help="skip the cold piper export")
    parser.add_argument("--music", type=Path, metavar="PATH",
                        help="play (and warm up) with --music PATH: first sound of a session "
                             "with music (the music's fade-in counts as its first sound)")
    parser.add_argument("--export-only", action="store_true",
                        help="only the cold piper export against the peer (no first sound)")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of another version (e.g. `git archive main | tar -x -C DIR`): "
                             "its first sounds measured interleaved with this one's")
    args = parser.parse_args()
    music = ["--music", str(args.music.resolve())] if args.music else []
    sys.path.insert(0, str(REPO))
    if args.export_only:
        export_only(args)
        return
    from tests.pulse import PulseServer

    work = Path(tempfile.mkdtemp(prefix="vc-bench-first-"))
    base = {k: v for k, v in os.environ.items() if k not in ("VOICECOACH_ENGINE", "PYTHONDONTWRITEBYTECODE")}
    base["VOICECOACH_DATA_DIR"] = str(work / "data")
    results: dict[tuple[str, str, str], list[float]] = {}
    rows: list[str] = []
    try:
        with PulseServer(sink_name="bench_first") as server:
            versions = {"this": base}
            if args.baseline:  # another checkout of voicecoach, run with this environment
                versions["baseline"] = {**base, "PYTHONPATH": str(args.baseline.resolve())}
            warm = {(v, e): work / f"warm-{v}-{e}" for v in versions for e in args.engines}
            for (version, engine), folder in warm.items():  # fill the warm caches (and bytecode)
                env = {**versions[version], "VOICECOACH_CACHE_DIR": str(folder)}
                play = [*VOICECOACH, "play", args.routine, "--no-log", "--engine", engine, *music]
                first_sound(server, play, env)  # the play's own greeting lines
                run_measured([*VOICECOACH, "export", args.routine, "--engine", engine, *music,
                              "-o", str(work / "warmup.wav")], env)
                first_sound(server, play, env)
            for run in range(args.runs):
                for engine in args.engines:
                    for state in ("cold", "warm"):
                        for version, venv in versions.items():
                            cache = warm[(version, engine)] if state == "warm" \
                                else work / f"cold-{version}-{engine}-{run}"
                            env = {**venv, "VOICECOACH_CACHE_DIR": str(cache)}
                            cmd = [*VOICECOACH, "play", args.routine, "--no-log", "--engine", engine,
                                   *music]
                            seconds = first_sound(server, cmd, env)
                            results.setdefault((version, engine, state), []).append(seconds)
                            print(f"  run {run + 1}: {version} {engine} {state}: {seconds:.3f} s",
                                  file=sys.stderr)
                            if state == "cold":
                                shutil.rmtree(cache, ignore_errors=True)
        for (version, engine, state), values in results.items():
            target = TARGETS[(engine, state)]
            ok = "ok" if statistics.median(values) <= target else "MISSED"
            rows.append(f"first sound of play, {version}, {engine}, {state} cache: {summary(values)}  "
                        f"target <= {target:g} s: {ok}")
        if "piper" in args.engines and not args.no_export:
            rows.extend(export_against_peer(args, base, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.routine}{' with --music ' + args.music.name if args.music else ''}, {args.runs} runs each, interleaved (medians, min-max):")
    for row in rows:
        print("  " + row)


def export_only(args: argparse.Namespace) -> None:
    """The cold piper export against the peer, nothing else (no PulseAudio needed)."""
    work = Path(tempfile.mkdtemp(prefix="vc-bench-export-"))
    base = {k: v for k, v in os.environ.items() if k not in ("VOICECOACH_ENGINE", "PYTHONDONTWRITEBYTECODE")}
    base["VOICECOACH_DATA_DIR"] = str(work / "data")
    try:
        load = os.getloadavg()
        rows = export_against_peer(args, base, work)
        after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.routine}, {args.runs} runs each, interleaved (medians, min-max):")
    for row in rows:
        print("  " + row)
    print(f"  load average (1 min): {load[0]:.2f} before, {after[0]:.2f} after")


def export_against_peer(args: argparse.Namespace, base: dict[str, str], work: Path) -> list[str]:
    from voicecoach.piper import resolve

    model = str(resolve(None).path)
    shown = subprocess.run([*VOICECOACH, "show", "--json", args.routine, "--engine", "piper"],
                           env={**base, "VOICECOACH_CACHE_DIR": str(work / "warm-piper")},
                           capture_output=True, text=True, check=True)
    timeline = work / "timeline.json"
    timeline.write_text(shown.stdout)
    peer = work / "peer.py"
    peer.write_text(PEER)
    ours: list[float] = []
    theirs: list[float] = []
    ours_mb: list[float] = []
    theirs_mb: list[float] = []
    for run in range(args.runs):
        cache = work / f"export-cold-{run}"
        seconds, mb = run_measured([*VOICECOACH, "export", args.routine, "--engine", "piper",
                                    "-o", str(work / "ours.wav")],
                                   {**base, "VOICECOACH_CACHE_DIR": str(cache)})
        shutil.rmtree(cache, ignore_errors=True)
        ours.append(seconds)
        ours_mb.append(mb)
        seconds, mb = run_measured([sys.executable, str(peer), model, str(timeline), str(work / "peer.wav")], base)
        theirs.append(seconds)
        theirs_mb.append(mb)
        print(f"  run {run + 1}: export {ours[-1]:.2f} s {ours_mb[-1]:.0f} MB, "
              f"peer {theirs[-1]:.2f} s {theirs_mb[-1]:.0f} MB", file=sys.stderr)
    ratio = statistics.median(ours) / statistics.median(theirs)
    events = sum(1 for e in json.loads(timeline.read_text())["events"] if e["kind"] == "speech")
    return [f"cold piper export: {summary(ours)}, peer ({events} lines): {summary(theirs)}: "
            f"{ratio:.2f}x  target <= 0.35x: {'ok' if ratio <= 0.35 else 'MISSED'}",
            f"peak memory: export {summary(ours_mb, 'MB')}, peer {summary(theirs_mb, 'MB')}  "
            f"target <= 250 MB: {'ok' if statistics.median(ours_mb) <= 250 else 'MISSED'}"]


if __name__ == "__main__":
    main()
