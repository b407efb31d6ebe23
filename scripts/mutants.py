"""Plant realistic bugs one at a time and see whether the tests notice. Run by hand.

Each mutant is one text replacement in one source file (the old text must occur exactly
once). It is applied to a fresh copy of the working tree in a temporary folder, never to
the tree itself; the tests that guard that code then run in the copy, with the copy
first on the import path (subprocesses the tests start inherit it). A mutant is killed
when they fail, and survives when they pass. A baseline run of the same tests on the
unchanged copy comes first: a failing baseline means nothing can be concluded.

    .venv/bin/python scripts/mutants.py                  # every mutant
    .venv/bin/python scripts/mutants.py restart-step pause-counted   # some, by name
    .venv/bin/python scripts/mutants.py --list
    .venv/bin/python scripts/mutants.py --no-baseline restart-step
    .venv/bin/python scripts/mutants.py --tests "tests/test_play.py -k keys" restart-step
    .venv/bin/python scripts/mutants.py --commit e472409 --tests tests   # older tests

A survivor is a missing test, or a change no test can see (`note` says which and why).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    """pytest arguments: files, node ids, -k expressions."""
    what: str
    note: str = ""
    """For a mutant expected to survive: why no test can tell."""


MUTANTS: tuple[Mutant, ...] = (
    # --- the four that survived before issue #20 ---
    Mutant("restart-step", "voicecoach/play.py",
           "self.jump(self._section_starts[self.section_index()])", "self.jump(0)",
           ("tests/test_play.py", "-k", "jump or keys"),
           "`b` jumps to the start of the session instead of the step's"),
    Mutant("pause-counted", "voicecoach/play.py",
           "return max(0.0, now - self._started_at - paused)",
           "return max(0.0, now - self._started_at)",
           ("tests/test_play.py", "-k", "played_time or keys"),
           "the pause is no longer subtracted from played_s"),
    Mutant("copy-not-rename", "voicecoach/files.py",
           "        os.replace(temp_path, real)",
           "        __import__('shutil').copyfile(temp_path, real)\n        os.unlink(temp_path)",
           ("tests/test_export.py", "-k", "renamed or atomic or overwrite or failure"),
           "the finished file is copied over the target, then unlinked: not atomic"),
    Mutant("loudness-0.5", "voicecoach/loudness.py",
           "SESSION_GAIN_DB = 0.2", "SESSION_GAIN_DB = 0.7",
           ("tests/test_render.py", "-k", "loudness"),
           "the session's gain moved by half a LU"),
    # --- the history ---
    Mutant("history-two-snapshots", "voicecoach/history.py",
           "version, application_id, tables = db.execute(_IDENTITY).fetchone()",
           "version = db.execute('PRAGMA user_version').fetchone()[0]\n"
           "    application_id = db.execute('PRAGMA application_id').fetchone()[0]\n"
           "    tables = db.execute('SELECT count(*) FROM sqlite_master').fetchone()[0]",
           ("tests/test_history.py", "-k", "at_once"),
           "the race of issue #20: version and tables read in two snapshots"),
    Mutant("history-torn-header", "voicecoach/history.py",
           "    for _ in range(HEADER_READS):", "    for _ in range(0):",
           ("tests/test_history.py", "-k", "header"),
           "a header caught mid-rewrite is believed at the first read"),
    Mutant("history-target-above-low", "voicecoach/history.py",
           "return sessions >= self.low", "return sessions > self.low",
           ("tests/test_history.py",),
           "a week is on target only above the low end of the dosage"),
    Mutant("history-sunday-weeks", "voicecoach/history.py",
           "return day - timedelta(days=day.weekday())",
           "return day - timedelta(days=day.isoweekday() % 7)",
           ("tests/test_history.py",),
           "weeks start on Sunday"),
    Mutant("history-ordinal", "voicecoach/history.py",
           "ordinal(done + 1)", "ordinal(done)",
           ("tests/test_history.py",),
           "the intro counts this session as already done"),
    Mutant("history-csv-newest-first", "voicecoach/history.py",
           "entries = list(reversed(sessions(routine_id, db_path)))",
           "entries = sessions(routine_id, db_path)",
           ("tests/test_history.py", "-k", "csv"),
           "the CSV lists the newest session first"),
    Mutant("history-no-retry", "voicecoach/history.py",
           "if not _busy(e) or time.monotonic() > deadline:", "if True:",
           ("tests/test_history.py", "-k", "at_once"),
           "a busy answer at once is not tried again"),
    Mutant("stopped-step-dropped", "voicecoach/cli.py",
           'stopped_at_step=None if ended == "completed" else coach.step_title(),',
           "stopped_at_step=None,",
           ("tests/test_play.py", "-k", "keys"),
           "a stopped session forgets where it stopped"),
    # --- writing files ---
    Mutant("temp-left-behind", "voicecoach/files.py",
           "            temp_path.unlink(missing_ok=True)", "            pass",
           ("tests/test_export.py", "-k", "failure or atomic"),
           "a failed write leaves its temporary file"),
    Mutant("symlink-replaced", "voicecoach/files.py",
           "return path if real == Path(os.path.abspath(path)) else real", "return path",
           ("tests/test_export.py", "tests/test_faults.py", "-k", "symlink"),
           "a symlink is replaced by a file instead of written through"),
    Mutant("no-fsync", "voicecoach/files.py",
           "        _fsync_path(temp_path)\n", "",
           ("tests/test_export.py", "tests/test_faults.py", "-k", "atomic or renamed or symlink"),
           "the temporary file is renamed without an fsync",
           note="only a power cut between the rename and the kernel's writeback shows it; "
                "no test can cut the power"),
    # --- timing: compile and schedule ---
    Mutant("resolve-bankers-rounding", "voicecoach/compile.py",
           "return float(int(amount.pick(level) + 0.5))",
           "return float(round(amount.pick(level)))",
           ("tests/test_compile.py", "tests/test_load.py"),
           "the middle of a range rounds half to even (2-3 gives 2) instead of half up"),
    Mutant("halfway-floored", "voicecoach/compile.py",
           '"start", seconds / 2, a.where', '"start", seconds // 2, a.where',
           ("tests/test_compile.py", "tests/test_golden.py"),
           "halfway in an odd hold is said half a second early"),
    Mutant("countdown-at-the-start-tone", "voicecoach/compile.py",
           "range(min(int(a.seconds), int(seconds) - 1), 0, -1)",
           "range(min(int(a.seconds), int(seconds)), 0, -1)",
           ("tests/test_compile.py", "tests/test_load.py", "tests/test_contract.py"),
           "a countdown as long as its hold ticks on top of the start tone"),
    Mutant("samples-truncated", "voicecoach/schedule.py",
           "    return round(seconds * sample_rate)", "    return int(seconds * sample_rate)",
           ("tests/test_compile.py", "tests/test_golden.py", "tests/test_render.py"),
           "seconds become samples by truncation"),
    Mutant("hold-end-late", "voicecoach/schedule.py",
           "            clock += length\n",
           "            clock += length + _samples(FOLLOW_GAP_S, sample_rate)\n",
           ("tests/test_compile.py",),
           "the tone ending a hold (and what follows) comes 0.1 s late"),
    # --- rendering and export ---
    Mutant("no-peak-ceiling", "voicecoach/render.py",
           "        scale = 1.0 if peak <= room else max(0.0, room) / peak",
           "        scale = 1.0",
           ("tests/test_render.py",),
           "the -1 dBFS peak ceiling is not applied where sounds overlap"),
    # --- music under the voice ---
    Mutant("duck-shallow", "voicecoach/music.py",
           "DUCK_DEPTH_DB = 18.0", "DUCK_DEPTH_DB = 12.0",
           ("tests/test_music.py", "-k", "15_db"),
           "the music falls 12 dB under the voice instead of 18"),
    Mutant("no-crossfade", "voicecoach/music.py",
           "            fade_out = min(crossfade, lengths[t] // 2, lengths[nxt] // 2)",
           "            fade_out = 0",
           ("tests/test_music.py", "-k", "clicks"),
           "tracks and loops butt-joined: a click at every join"),
    Mutant("music-not-in-loudness", "voicecoach/render.py",
           "            step_energies += self.music.step_energies(steps)",
           "            pass",
           ("tests/test_music.py", "-k", "voice_level"),
           "the session's measured loudness leaves the music out"),
    Mutant("ogg-second-half-late", "voicecoach/vorbis.py",
           "    y = cut + int(b.center[k])\n",
           "    y = cut + int(b.center[k]) + 2 * short_q\n",
           ("tests/test_vorbis.py",),
           "the OGG join bridges one short block too many: the second half 256 samples late"),
    Mutant("ogg-granules-not-moved", "voicecoach/vorbis.py",
           "granule + cut if granule != -1 else -1",
           "granule if granule != -1 else -1",
           ("tests/test_vorbis.py",),
           "the second encoder's pages keep their own granule positions: a wrong length"),
    Mutant("chapter-ms-truncated", "voicecoach/audiofile.py",
           "    return (samples * 1000 + sample_rate // 2) // sample_rate",
           "    return samples * 1000 // sample_rate",
           ("tests/test_export.py", "tests/test_render.py", "-k", "chapter or caption"),
           "chapter and caption times truncated to the millisecond instead of rounded"),
)


def tree_files(root: Path) -> list[str]:
    """The working tree as git sees it (tracked and new files, nothing ignored)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


def copy_tree(destination: Path, commit: str | None = None) -> None:
    """The working tree, or with `commit` that commit's tree (to see what older tests caught)."""
    if commit:
        destination.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
        return
    for name in tree_files(REPO):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def applies(mutant: Mutant, tree: Path) -> bool:
    return (tree / mutant.file).read_text().count(mutant.old) == 1


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.file
    text = path.read_text()
    found = text.count(mutant.old)
    if found != 1:
        raise SystemExit(f"{mutant.name}: the old text occurs {found} times in {mutant.file}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int | None, str, float]:
    """pytest in the copy: (exit code or None on timeout, its last lines, seconds)."""
    env = {k: v for k, v in os.environ.items() if k != "VOICECOACH_UPDATE_GOLDEN"}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *tests], cwd=tree, env=env, capture_output=True, text=True,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, "timed out", time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return result.returncode, " | ".join(failed[:1] + lines[-1:]), time.monotonic() - started


def imports_from(tree: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", "import voicecoach; print(voicecoach.__file__)"],
                         cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline run of the unchanged tree")
    parser.add_argument("--commit", help="mutate this commit's tree instead of the working "
                                         "tree (mutants whose text it lacks are left out)")
    parser.add_argument("--tests", help="pytest arguments to run instead of each mutant's own, "
                                        "e.g. \"tests/test_play.py -k keys\"")
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28} {m.file:24} {m.what}")
        return 0
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.tests:
        chosen = [replace(m, tests=tuple(shlex.split(args.tests))) for m in chosen]

    with tempfile.TemporaryDirectory(prefix="vc-mutants-") as scratch:
        base = Path(scratch) / "base"
        copy_tree(base, args.commit)
        where = imports_from(base)
        if not where.is_relative_to(base):
            raise SystemExit(f"the copy would import voicecoach from {where}, not from the copy")
        if args.commit:
            for m in chosen:
                if not applies(m, base):
                    print(f"n/a       {m.name:28} not in {args.commit}'s {m.file}")
            chosen = [m for m in chosen if applies(m, base)]
        for m in chosen:  # every mutant applies to the unchanged tree
            apply(m, Path(shutil.copytree(base, Path(scratch) / "check", dirs_exist_ok=True)))
            shutil.rmtree(Path(scratch) / "check")
        if not args.no_baseline:
            selections = list(dict.fromkeys(m.tests for m in chosen))
            for tests in selections:
                code, tail, seconds = run_tests(base, tests)
                print(f"baseline  {' '.join(tests)}: {tail} ({seconds:.0f} s)", flush=True)
                if code != 0:  # once more, to tell a flaky test from a broken one
                    code, tail, seconds = run_tests(base, tests)
                    print(f"  again:  {tail} ({seconds:.0f} s)", flush=True)
                    if code != 0:
                        print("the baseline fails: fix the tests before judging mutants")
                        return 1
                    print("  a flaky test: a mutant it kills may be a false kill", flush=True)
        results = []
        for m in chosen:
            tree = Path(scratch) / m.name
            shutil.copytree(base, tree)
            apply(m, tree)
            code, tail, seconds = run_tests(tree, m.tests)
            shutil.rmtree(tree)
            verdict = "timeout" if code is None else "survived" if code == 0 else "killed"
            results.append((m, verdict))
            print(f"{verdict:8}  {m.name:28} {seconds:5.0f} s  {m.what}", flush=True)
            if verdict != "survived":
                print(f"          {tail}", flush=True)
            elif m.note:
                print(f"          expected: {m.note}", flush=True)

    killed = sum(verdict != "survived" for _, verdict in results)
    print(f"\nscore: {killed}/{len(results)} killed")
    for m, verdict in results:
        if verdict == "survived":
            print(f"  survived: {m.name}: {m.note or 'no test notices: ' + m.what}")
    return 0 if all(verdict != "survived" or m.note for m, verdict in results) else 1


if __name__ == "__main__":
    sys.exit(main())
