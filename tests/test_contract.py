"""One contract: if `validate` accepts a routine, `show`, `export` and `play` work on it,
for every option value the help allows; and what it refuses, it refuses located, at once.

These run the real CLI (click's runner, in this process) over real files, with the real
espeak-ng voice and the test run's shared phrase cache.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from voicecoach.cli import cli
from voicecoach.load import bundled_ids, load
from tests.output import without_stage_lines

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write(folder: Path, text: str, name: str = "r.yaml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def holds_are_exact(timeline: dict[str, object], hold_s: float | None = None) -> int:
    """Every hold-start tone is followed by its hold-end tone exactly a hold later."""
    events = timeline["events"]
    assert isinstance(events, list)
    tones = [e for e in events if e.get("tone") in ("hold_start", "hold_end", "rest")]
    holds = 0
    for s, e in zip(tones, tones[1:], strict=False):
        if s["tone"] != "hold_start":
            continue
        assert e["tone"] == "hold_end"  # a hold ends before anything else starts
        assert e["start"] > s["start"]
        holds += 1
        if hold_s is not None and s["step"] not in ("Shoulder shrugs",):
            assert abs(e["start"] - s["start"] - hold_s) < 1e-4
    return holds


def well_formed(timeline: dict[str, object]) -> None:
    events = timeline["events"]
    assert isinstance(events, list)
    duration = timeline["duration"]
    assert isinstance(duration, float)
    starts = [e["start"] for e in events]
    assert starts == sorted(starts)
    for e in events:
        assert 0 <= e["start"] <= e["end"] <= duration


# -- The README's examples --------------------------------------------------------------

README_ROUTINES = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_has_a_routine_example() -> None:
    assert README_ROUTINES


@pytest.mark.parametrize("index", range(len(README_ROUTINES)))
def test_every_readme_routine_validates_shows_and_exports(index: int, tmp_path: Path) -> None:
    path = write(tmp_path, README_ROUTINES[index], "example.yaml")
    assert run("validate", path) == (0, f"{path}: ok\n", "")
    code, out, err = run("show", path, "--json")
    assert (code, without_stage_lines(err)) == (0, "")
    timeline = json.loads(out)
    well_formed(timeline)
    assert holds_are_exact(timeline) > 0
    wav = tmp_path / "example.wav"
    code, out, err = run("export", path, "-o", str(wav))
    assert code == 0, err
    info = soundfile.info(str(wav))
    assert info.frames == round(timeline["duration"] * timeline["sample_rate"])


# -- Template words ----------------------------------------------------------------------

HOLD_STEP = "title: T\nsteps:\n  - name: A\n    hold: 5\n    say: ['{text}']\n"


@pytest.mark.parametrize(("text", "message"), [
    ("Hold {seconds:d}", "{seconds:d} in 'Hold {seconds:d}': only plain words like {seconds} are allowed"),
    ("Hold {seconds:,}", "{seconds:,} in 'Hold {seconds:,}': only plain words"),
    ("Hold {seconds!r}", "{seconds!r} in 'Hold {seconds!r}': only plain words"),
    ("Hold {seconds:{reps}}", "{seconds:{reps}} in 'Hold {seconds:{reps}}': only plain words"),
    ("{x.__class__}", "{x.__class__} in '{x.__class__}' is not a template word"),
    ("{seconds[0]}", "{seconds[0]} in '{seconds[0]}' is not a template word"),
    ("a {} b", "empty {} in 'a {} b' is not a template word"),
    ("a } b", "unbalanced { or } in 'a } b': write {{ or }} for a literal brace"),
    ("Your {side} side", "unknown template word {side} in 'Your {side} side'; valid here: {seconds}, "
                         "{set}, {sets} ({side} works in a step with 'sides')"),
])
def test_template_words_are_plain_and_located(text: str, message: str, tmp_path: Path) -> None:
    path = write(tmp_path, HOLD_STEP.format(text=text))
    code, out, err = run("validate", path)
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}:5:11: steps[0].say[0]: ")
    assert message in err
    assert "Traceback" not in err
    assert run("show", path)[0] == 2


@pytest.mark.parametrize(("routine", "where"), [
    # {side} in a sided step's `after` (said once, after both sides)
    ("  - name: A\n    sides: [left, right]\n    hold: 5\n    after: ['Relax your {side} side.']\n",
     "steps[0].after[0]"),
    # {seconds} in a reps step
    ("  - name: A\n    reps: 3\n    say: ['Hold {seconds} seconds.']\n    tempo:\n      - say: Up.\n"
     "        seconds: 2\n", "steps[0].say[0]"),
    # {rep} outside the tempo
    ("  - name: A\n    reps: 3\n    say: ['Rep {rep}.']\n    tempo:\n      - say: Up.\n        seconds: 2\n",
     "steps[0].say[0]"),
    # {arm} outside arms
    ("  - name: A\n    reps: 3\n    tempo:\n      - say: Lift {arm}.\n        seconds: 2\n",
     "steps[0].tempo[0].say"),
    # {set} in `after`
    ("  - name: A\n    hold: 5\n    sets: 2\n    after: ['Set {set} done.']\n", "steps[0].after[0]"),
])
def test_a_word_without_a_value_there_is_refused(routine: str, where: str, tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n" + routine)
    code, _, err = run("validate", path)
    assert code == 2
    assert f": {where}: unknown template word" in err
    assert "Traceback" not in err


def test_numbers_agree_with_their_words(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n  - name: A\n    hold: 20\n"
                           "    say: ['Hold for {seconds} seconds.']\n"
                           "  - name: B\n    reps: 4\n    say: ['{reps} reps, {reps} times.']\n"
                           "    tempo:\n      - say: Up.\n        seconds: 2\n")
    texts = [e.get("text") for e in json.loads(run("show", path, "--json", "--hold", "1",
                                                   "--reps", "1")[1])["events"]]
    assert "Hold for 1 second." in texts
    assert "1 rep, 1 time." in texts
    texts = [e.get("text") for e in json.loads(run("show", path, "--json")[1])["events"]]
    assert "Hold for 20 seconds." in texts
    assert "4 reps, 4 times." in texts


# -- Options never break a routine that validates ----------------------------------------

def _bundled_sessions() -> list[tuple[str, str]]:
    return [(r, v) for r in bundled_ids() for v in load(r).variation_names]


@pytest.mark.parametrize(("routine", "variation"), _bundled_sessions())
@pytest.mark.parametrize("level", ["low", "middle", "high"])
def test_bundled_routines_take_every_hold_and_rep_count(routine: str, variation: str,
                                                        level: str) -> None:
    for option, values in (("--hold", ("1", "2", "3", "5", "8")), ("--reps", ("1", "2", "50", "125", "1000"))):
        for value in values:
            code, out, err = run("show", routine, "--json", "--variation", variation,
                                 "--level", level, option, value)
            assert code == 0, f"{option} {value}: {err}"
            timeline = json.loads(out)
            well_formed(timeline)
            holds_are_exact(timeline, float(value) if option == "--hold" else None)
            for notice in timeline["notices"]:  # what was adapted is said, on stderr too
                assert f"Note: adapted to your options: {notice}." in err


def test_an_adapted_session_says_what_was_adapted() -> None:
    code, out, err = run("show", "upper-back-knot", "--json", "--hold", "2")
    assert code == 0
    notices = json.loads(out)["notices"]
    assert any("left out" in n and "2-second hold" in n for n in notices)
    code, out, err = run("show", "upper-back-knot", "--json", "--reps", "125")
    assert code == 0
    assert any("slowed the 'Up.' phase beyond its 2 s" in n for n in json.loads(out)["notices"])
    # the routine as written needs no adapting
    assert json.loads(run("show", "upper-back-knot", "--json")[1])["notices"] == []


def test_a_slowed_phase_still_holds_its_words(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n  - name: A\n    reps: 3\n    tempo:\n"
                           "      - say: Up.\n        seconds: 1\n      - say: Down.\n        seconds: 1\n")
    assert run("validate", path)[0] == 0
    code, out, _ = run("show", path, "--json", "--reps", "125")
    assert code == 0
    events = json.loads(out)["events"]
    speech = [e for e in events if "text" in e and e["step"] == "A"]
    for before, after in zip(speech, speech[1:], strict=False):
        assert before["end"] <= after["start"]  # nothing spoken over anything else


@pytest.mark.parametrize("args", [
    ("--hold", "nan"), ("--hold", "inf"), ("--hold", "-inf"), ("--volume", "nan"),
    ("--volume", "inf"), ("--hold", "0.5"), ("--reps", "1001"), ("--rate", "79"),
])
def test_numbers_outside_the_range_or_not_finite_are_refused(args: tuple[str, str]) -> None:
    code, out, err = run("export", "mid-back-knot", "-o", "never.wav", *args)
    assert code == 2
    assert f"Invalid value for '{args[0]}'" in err
    assert not Path("never.wav").exists()


ROUTINE_WITH_EVERYTHING = """\
title: Everything
variations:
  a: {title: A, default: true}
  b: {title: B}
defaults:
  get_ready: 2
  during:
    - halfway: Halfway there, keep breathing.
    - left: 10
      say: Ten seconds left.
    - countdown: 3
steps:
  - name: Stretch
    sides: [left, right]
    say: ['Stretch your {side} side for {seconds} seconds.']
    hold: 30-40
    repeat: 2
    between: ['Again, {seconds} seconds.']
    sets: 2
    rest: 5
    after: [Relax.]
  - name: Rows
    only: [b]
    reps: 8-12
    sets: 3
    rest: 1
    say: ['{reps} rows.']
    tempo:
      - hold: 2
        say: Squeeze.
      - arms: [left, right]
        say: Now each arm.
        switch: Your {arm} arm.
        phases:
          - say: Lift {arm}.
            seconds: 1.5
      - say: Down.
        seconds: 1
"""


@pytest.mark.parametrize("args", [
    (), ("--hold", "1"), ("--hold", "3600"), ("--reps", "1"), ("--reps", "1000"),
    ("--rate", "80"), ("--rate", "400"), ("--volume", "0.1"), ("--level", "low"),
    ("--level", "high"), ("--variation", "b", "--hold", "1", "--reps", "1000", "--rate", "80"),
])
def test_what_validate_accepts_shows_at_the_ends_of_every_range(args: tuple[str, ...],
                                                                tmp_path: Path) -> None:
    path = write(tmp_path, ROUTINE_WITH_EVERYTHING)
    assert run("validate", path) == (0, f"{path}: ok\n", "")
    code, out, err = run("show", path, "--json", *args)
    assert code == 0, err
    timeline = json.loads(out)
    well_formed(timeline)
    holds_are_exact(timeline, float(args[1]) if args[:1] == ("--hold",) else None)


def test_a_rest_too_short_for_its_words_leaves_them_out(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n  - name: A\n    hold: 5\n    sets: 2\n    rest: 1\n")
    assert run("validate", path)[0] == 0
    events = json.loads(run("show", path, "--json")[1])["events"]
    assert [e.get("tone") for e in events].count("rest") == 1
    assert "Set 2 of 2." in [e.get("text") for e in events]
    assert "Set 2 of 2 next." not in [e.get("text") for e in events]


def test_a_problem_at_one_level_is_found_by_validate_and_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n  - name: A\n    hold: 2-20\n    during:\n"
                           "      - halfway: This is a rather long thing to say halfway through a hold.\n")
    code, _, err = run("validate", path)
    assert code == 2
    assert "does not fit in the 2-second window" in err
    assert "(at level low)" in err
    assert err.count("\n") == 1
    assert run("show", path, "--level", "low")[0] == 2
    assert run("show", path, "--level", "high")[0] == 0


def test_an_option_that_makes_a_session_too_long_names_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nsteps:\n  - name: A\n    reps: 10\n    sets: 3\n"
                           "    tempo:\n      - say: Slowly.\n        seconds: 60\n")
    assert run("validate", path)[0] == 0
    code, _, err = run("show", path, "--reps", "1000")
    assert code == 2
    assert err == "Error: --reps 1000 would make this session at least 50 hours long; a session " \
                  "may last at most 24 hours\n"


# -- Bounded work before any work --------------------------------------------------------

def test_a_tiny_file_asking_for_billions_of_reps_is_refused_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "title: b\nsteps:\n  - name: a\n    reps: 1000\n    sets: 1000\n"
                           "    repeat: 1000\n    tempo:\n      - say: x\n        seconds: 1\n")
    for command in ("validate", "show"):
        started = time.monotonic()
        code, _, err = run(command, path)
        assert time.monotonic() - started < 5
        assert code == 2
        assert err.startswith(f"{path}:3:5: steps[0]: the session would be at least 277,778 hours long")


def test_routine_files_must_be_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        started = time.monotonic()
        code, _, err = run("validate", path)
        assert time.monotonic() - started < 5
        assert (code, err) == (2, f"Error: cannot read routine file {path}: it is not a regular file "
                                  "(a device, FIFO or socket)\n")
        assert run("show", path)[0] == 2


def _wav_with_rate(path: Path, rate: int) -> None:
    data = np.zeros(4, np.int16).tobytes()
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
              + b"data" + struct.pack("<I", len(data)))
    path.write_bytes(header + data)


def test_sound_files_are_checked_by_validate(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.wav")
    _wav_with_rate(tmp_path / "onehz.wav", 1)
    soundfile.write(tmp_path / "long.wav", np.zeros(22050 * 11, np.float32), 22050)
    (tmp_path / "text.wav").write_text("not audio")
    path = write(tmp_path, "title: s\nsounds:\n  hold_start: /dev/zero\n  hold_end: onehz.wav\n"
                           "  switch: long.wav\n  rest: nothere.wav\n  countdown: fifo.wav\n"
                           "  finish: text.wav\nsteps:\n  - name: a\n    hold: 3\n")
    started = time.monotonic()
    code, out, err = run("validate", path)
    assert time.monotonic() - started < 5
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{path}:3:15: sounds.hold_start: cannot read sound file '/dev/zero': it is not a regular "
        "file (a device, FIFO or socket)",
        f"{path}:4:13: sounds.hold_end: cannot read sound file '{tmp_path}/onehz.wav': its sample rate is 1 Hz; "
        "expected 8000 to 192000 Hz",
        f"{path}:5:11: sounds.switch: cannot read sound file '{tmp_path}/long.wav': it lasts 11.0 s; a tone may "
        "last at most 10 s",
        f"{path}:6:9: sounds.rest: cannot read sound file '{tmp_path}/nothere.wav': no such file",
        f"{path}:7:14: sounds.countdown: cannot read sound file '{tmp_path}/fifo.wav': it is not a regular file "
        "(a device, FIFO or socket)",
        f"{path}:8:11: sounds.finish: cannot read sound file '{tmp_path}/text.wav': format not recognised",
    ]
    assert run("show", path)[0] == 2


# -- Every problem at once, readable ------------------------------------------------------

def test_a_type_error_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "title: T\nvariations:\n  a: {title: A}\n  b: {title: B}\nsteps:\n"
                           "  - name: A\n    hold: soon\n  - name: B\n    hold: 5\n"
                           "    say: ['Your {side} side.']\n")
    code, _, err = run("validate", path)
    assert code == 2
    lines = err.splitlines()
    assert any("variations: exactly one variation needs 'default: true', found 0" in x for x in lines)
    assert any("steps[0].hold: expected seconds or a range like 20-30, got 'soon'" in x for x in lines)
    assert any("steps[1].say[0]: unknown template word {side}" in x for x in lines)


def test_thousands_of_problems_are_capped_with_a_count(tmp_path: Path) -> None:
    steps = "".join(f"  - name: S{i}\n    hold: soon\n" for i in range(300))
    path = write(tmp_path, "title: T\nsteps:\n" + steps)
    code, _, err = run("validate", path)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 26
    assert lines[-1] == f"... and 275 more problems in {path}"
    assert run("show", path)[1:] == ("", err)


@pytest.mark.parametrize(("text", "expected"), [
    ("title: T\nsteps:\n  - name: A\n    say: [Draw your chin back, hold, release {reps} times.]\n",
     ":4:46: invalid YAML: expected ',' or ']', but got '{' (text with {words} inside a [...] list "
     "must be in quotes"),
    ("title: T\nsteps:\n  - name: A\n    say: [Draw your chin back, hold, release.]\n",
     ":4:10: steps[0].say: this [...] list splits its text at every comma into 3 spoken lines"),
    ("title: T\nsteps:\n  - name: A\n   hold: 3\n",
     ":4:4: invalid YAML: expected <block end>, but found '<block mapping start>' (check the "
     "indentation"),
    ("title: T\nsteps:\n  - name: A\n    say:\n      - Note: this hurts.\n",
     ":5:9: steps[0].say[0]: expected text, got a mapping: text with ': ' in it must be in quotes"),
])
def test_common_yaml_mistakes_get_a_hint(text: str, expected: str, tmp_path: Path) -> None:
    path = write(tmp_path, text)
    code, _, err = run("validate", path)
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1


def test_sentences_in_brackets_are_fine() -> None:
    from voicecoach.load import loads

    routine = loads("title: T\nsteps:\n  - name: A\n    say: [Sit tall., Breathe.]\n    sides: [left, right]\n")
    assert len(routine.steps[0].say) == 2
