"""Send a stop signal at many moments of a voicecoach command and count how each run ended.

`play` (the default) plays a routine on a terminal of its own (a pseudo-terminal) through
a private PulseAudio server with a null sink; SIGINT is typed as Ctrl-C there, SIGTERM
and SIGHUP are sent with kill. A hang one run in ~140 in start-up's first half second is
what this found (an import interrupted in one thread while another imported too); see
voicecoach/stops.py.

`export` writes tests/cases/short.yaml to an MP3 in a fresh folder (stdin /dev/null,
started as a shell starts it) and is sent the signal after the delay. A run that ended
before the signal is "finished" (its file must be whole: the same bytes as a reference
export made first); otherwise the run must end with 128 + the signal's number, one line
("Interrupted.", "Stopped by SIGTERM.", "Stopped by SIGHUP.") on stderr besides the
stage lines, no traceback, and nothing in the folder but, at most, a whole file.

`serve` is started with --port 0 and sent the signal after the delay, before or after it
has printed its address; it must end the same way, leaving no temporary file in its
data folder.

The delay counts from just before the process is started (fork and exec included).
Outcomes: "clean"; "finished" (ended before the signal); "done, then the signal ignored"
(it came after the work, as Python finished: exit 0, "Wrote", nothing on stderr);
"finished after signal" (exit 0 although the signal came while it ran: lost, or a
traceback at exit); "exit N" (N < 0:
killed by the signal, "(silent)" before a handler of Python's or ours was in place or
after Python's finalization put the defaults back, "(traceback)" an uncaught
KeyboardInterrupt); "wrong stderr"; "leftovers"; "orphan" (a helper process still
running 3 s after voicecoach ended); "hang".

Every run expected to stop and still going 30 s later (--timeout) is a hang: its
threads' stacks are printed (faulthandler, on SIGABRT). Every failure is printed with
its delay, exit code and whole stderr; --log FILE also writes one JSON line per run.

    python scripts/ctrl_c_sweep.py                       # play, 0.10 to 1.50 s, every 10 ms
    python scripts/ctrl_c_sweep.py --from 0.15 --to 0.5 --step 0.005 --cold
    python scripts/ctrl_c_sweep.py --command export --signal TERM --from 0.05 --to 3 --step 0.02
    python scripts/ctrl_c_sweep.py --command serve --from 0 --to 1.5
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.output import without_stage_lines  # noqa: E402
from tests.terminal import as_a_shell_starts_it  # noqa: E402

SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP}
VOICECOACH = [sys.executable, "-m", "voicecoach"]
GOOD = {"clean", "finished", "done, then the signal ignored"}
"""Outcomes that are not failures (the others are printed in full)."""


def said(signum: int) -> str:
    return "Interrupted." if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}."


@dataclass
class Run:
    delay: float
    outcome: str = ""
    status: int | None = None
    stderr: str = ""
    stdout: str = ""
    detail: str = ""
    signal_to_exit_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"{self.delay:.3f} s: {self.outcome.upper()} (exit {self.status})"]
        if self.detail:
            lines.append(f"  {self.detail}")
        if self.extra:
            lines.append(f"  {self.extra}")
        lines.append("  --- stdout (last 1500 chars) ---")
        lines.append(self.stdout[-1500:])
        lines.append("  --- stderr (whole) ---")
        lines.append(self.stderr)
        return "\n".join(lines)


# --- orphans: a helper process left running once voicecoach has ended ---------------------

def become_subreaper() -> None:
    """Orphaned grandchildren (the espeak helper) become ours, so they can be seen."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def our_children(ignore: set[int]) -> dict[int, str]:
    found = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ignore:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            state = stat.rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = f"[{state}] {cmd}"
    return found


def reap_orphans(ignore: set[int], wait_s: float = 3.0) -> list[str]:
    """Processes that voicecoach left behind: reaped if they end within wait_s, else killed
    and named (the caller records them)."""
    deadline = time.monotonic() + wait_s
    lingering: dict[int, str] = {}
    while True:
        children = our_children(ignore)
        for pid, what in children.items():
            if what.startswith("[Z]"):
                os.waitpid(pid, os.WNOHANG)
        lingering = {pid: what for pid, what in our_children(ignore).items()
                     if not what.startswith("[Z]")}
        if not lingering or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in lingering:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return [f"pid {pid}: {what}" for pid, what in lingering.items()]


# --- one run of export or serve --------------------------------------------------------------

def spawn(args: list[str], env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                env={**env, "PYTHONFAULTHANDLER": "1"},
                                preexec_fn=as_a_shell_starts_it)


def finish(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once the process has ended; False (and its stacks in its stderr) on a hang."""
    try:
        process.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return False


def one_run(command: str, delay: float, signum: int, env: dict[str, str], work: Path,
            reference: bytes | None, timeout_s: float) -> Run:
    run = Run(delay)
    folder = work / "out"
    folder.mkdir()
    target = folder / "out.mp3"
    if command == "export":
        args = [*VOICECOACH, "export", str(ROOT / "tests" / "cases" / "short.yaml"),
                "-o", str(target)]
    else:
        args = [*VOICECOACH, "serve", "--port", "0"]
    out, err = work / "stdout", work / "stderr"
    start = time.monotonic()
    process = spawn(args, env, out, err)
    time.sleep(max(0.0, start + delay - time.monotonic()))
    ended_first = process.poll() is not None
    address_before = out.read_bytes().startswith(b"voicecoach is at ")
    sent_at = time.monotonic()
    if not ended_first:
        process.send_signal(signum)
        run.extra["sent_after_s"] = round(sent_at - start, 3)
    ended = finish(process, timeout_s)
    run.signal_to_exit_s = None if ended_first else round(time.monotonic() - sent_at, 3)
    run.status = process.returncode
    run.stdout = out.read_text(errors="replace")
    run.stderr = err.read_text(errors="replace")
    if command == "serve":
        run.extra["address_printed_before_signal"] = address_before
    left = sorted(os.listdir(folder))
    run.extra["left"] = left
    data_temps = [str(p) for p in Path(env["VOICECOACH_DATA_DIR"]).rglob("*")
                  if p.name.endswith(".part")]
    if data_temps:
        run.extra["data_dir_temps"] = data_temps
    orphans = reap_orphans({process.pid})
    if orphans:
        run.extra["orphans_killed"] = orphans

    whole = None
    if target.exists():
        whole = reference is None or target.read_bytes() == reference
        run.extra["output_bytes"] = target.stat().st_size
    rest = without_stage_lines(run.stderr)
    if not ended:
        run.outcome = "hang"
        run.detail = f"still running {timeout_s:g} s after the signal; stacks in stderr"
    elif ended_first or (command == "export" and run.status == 0):
        if command == "serve":
            run.outcome = "ended before signal"
        elif run.status != 0 or left != ["out.mp3"] or not whole:
            run.outcome = "finished badly"
            run.detail = f"exit {run.status}, folder {left}, whole {whole}"
        else:
            # exit 0 although the signal was sent while it ran: clean if it came once the
            # work was done ("Wrote", nothing on stderr: stops.ignored_from_now), else lost
            run.outcome = "finished" if ended_first else (
                "done, then the signal ignored" if "Wrote" in run.stdout and not rest
                else "finished after signal")
            if run.outcome == "finished after signal":
                run.detail = (f"exit 0 {run.signal_to_exit_s} s after the signal; "
                              f"file whole: {whole}")
    elif run.status != 128 + signum:
        run.outcome = f"exit {run.status}"
        if run.status is not None and run.status < 0:
            # Python's default handling: no handler yet (stderr empty), or an uncaught
            # KeyboardInterrupt, which Python 3.11 reports and then dies of (a traceback)
            run.outcome += " (traceback)" if "Traceback" in run.stderr else (
                " (silent)" if not run.stderr.strip() else " (other)")
            run.detail = f"ended by {signal.Signals(-run.status).name}"
    elif rest != said(signum) + "\n":
        run.outcome = "wrong stderr"
    elif left not in ([], ["out.mp3"]) or (left == ["out.mp3"] and not whole):
        run.outcome = "leftovers"
        run.detail = f"folder holds {left}, output whole: {whole}"
    elif data_temps:
        run.outcome = "leftovers"
        run.detail = f"temporary files in the data folder: {data_temps}"
    else:
        run.outcome = "clean"
        if left == ["out.mp3"]:
            run.extra["note"] = "stopped, but the whole file was already written"
    if orphans and run.outcome in GOOD | {"finished after signal"}:
        run.outcome = "orphan"
        run.detail = f"helper processes still running 3 s after voicecoach ended: {orphans}"
    return run


def warm_up(command: str, env: dict[str, str], home: Path) -> None:
    """Fill the phrase cache: export the routine once, or for serve every bundled routine's
    phrases (serve works their lengths out as it starts: asked for once, then stopped)."""
    if command == "export":
        subprocess.run([*VOICECOACH, "export", str(ROOT / "tests" / "cases" / "short.yaml"),
                        "-o", str(home / "warm.mp3")], env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=300, check=True)
        return
    import urllib.request

    process = subprocess.Popen([*VOICECOACH, "serve", "--port", "0"], env=env, text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, preexec_fn=as_a_shell_starts_it)
    assert process.stdout is not None
    url = process.stdout.readline().split()[-1]
    with urllib.request.urlopen(url + "api/routines", timeout=300) as answer:
        answer.read()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)


def sweep_processes(args: argparse.Namespace, signum: int) -> collections.Counter[str]:
    become_subreaper()
    outcomes: collections.Counter[str] = collections.Counter()
    log = open(args.log, "a") if args.log else None  # noqa: SIM115
    with tempfile.TemporaryDirectory(prefix="vc-sweep-") as base:
        home = Path(base)
        env = {**os.environ, "VOICECOACH_ENGINE": os.environ.get("VOICECOACH_ENGINE", "espeak"),
               "VOICECOACH_CACHE_DIR": str(home / "cache"),
               "VOICECOACH_DATA_DIR": str(home / "data")}
        reference = None
        if args.command == "export":
            made = subprocess.run([*VOICECOACH, "export", str(ROOT / "tests" / "cases" / "short.yaml"),
                                   "-o", str(home / "reference.mp3")], env={**env, "VOICECOACH_CACHE_DIR":
                                   str(home / "reference-cache")}, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=300)
            if made.returncode != 0:
                print(f"the reference export failed: {made.stderr}", file=sys.stderr)
                return collections.Counter({"no reference": 1})
            reference = (home / "reference.mp3").read_bytes()
        if not args.cold:  # a warm cache, as a second run meets it (--cold: a fresh one every run)
            warm_up(args.command, env, home)
        n = 0
        delay = args.start
        while delay <= args.stop + 1e-9:
            work = home / f"run-{n}"
            work.mkdir()
            run_env = dict(env)
            if args.cold:
                run_env["VOICECOACH_CACHE_DIR"] = str(work / "cache")
            run_env["VOICECOACH_DATA_DIR"] = str(work / "data")
            run = one_run(args.command, delay, signum, run_env, work, reference, args.timeout)
            outcomes[run.outcome] += 1
            if run.outcome not in GOOD:
                print(run.report(), flush=True)
            elif args.verbose:
                print(f"{delay:.3f} s: {run.outcome} exit {run.status} "
                      f"in {run.signal_to_exit_s} s {run.extra}", flush=True)
            if log:
                log.write(json.dumps({"command": args.command, "signal": args.signal,
                                      "cold": args.cold, **run.__dict__}) + "\n")
                log.flush()
            shutil.rmtree(work, ignore_errors=True)
            n += 1
            delay += args.step
    if log:
        log.close()
    return outcomes


# --- play, on a terminal ---------------------------------------------------------------------

def sweep_play(args: argparse.Namespace, signum: int) -> collections.Counter[str]:
    import pytest

    from tests.pulse import PulseServer
    from tests.terminal import OnTerminal

    outcomes: collections.Counter[str] = collections.Counter()
    with PulseServer() as server, tempfile.TemporaryDirectory() as data:
        env = {**os.environ, **server.env, "VOICECOACH_DATA_DIR": data,
               "VOICECOACH_ENGINE": os.environ.get("VOICECOACH_ENGINE", "espeak")}
        delay = args.start
        while delay <= args.stop + 1e-9:
            if args.cold:
                env["VOICECOACH_CACHE_DIR"] = tempfile.mkdtemp(prefix="vc-sweep-cache-")
            run = OnTerminal.spawn([sys.executable, "-m", "voicecoach", "play", args.routine],
                                   env=env)
            time.sleep(delay)
            if signum == signal.SIGINT:
                run.type(b"\x03")
            else:
                os.kill(run.pid, signum)
            try:
                status, output = run.finish(timeout_s=args.timeout)
            except pytest.fail.Exception as hung:
                outcomes["hang"] += 1
                print(f"{delay:.3f} s: HANG\n{hung}", flush=True)
            else:
                clean = (status == 128 + signum and output.rstrip().endswith(said(signum))
                         and "Traceback" not in output and "ignored" not in output)
                outcomes["clean" if clean else f"exit {status}"] += 1
                if not clean:
                    print(f"{delay:.3f} s: exit {status}\n{output[-1500:]}", flush=True)
            delay += args.step
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", choices=["export", "serve", "play"], default="play")
    parser.add_argument("--signal", choices=list(SIGNALS), default="INT")
    parser.add_argument("--routine", default=str(ROOT / "tests" / "cases" / "short.yaml"),
                        help="play only")
    parser.add_argument("--from", dest="start", type=float, default=0.10)
    parser.add_argument("--to", dest="stop", type=float, default=1.50)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--cold", action="store_true", help="a fresh phrase cache for every run")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds after the signal before a run counts as a hang")
    parser.add_argument("--log", help="export and serve: append one JSON line per run here")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line for every run")
    args = parser.parse_args()
    signum = SIGNALS[args.signal]
    if args.command == "play":
        outcomes = sweep_play(args, signum)
    else:
        outcomes = sweep_processes(args, signum)
    print(", ".join(f"{name}: {count}" for name, count in sorted(outcomes.items())))
    return 0 if set(outcomes) <= GOOD else 1


if __name__ == "__main__":
    sys.exit(main())
