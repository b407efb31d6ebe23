"""The coach's language: exercise names and places, rep milestones, holds that announce in
a sensible order, brief sessions, and spoken progress from the history."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.pulse import PulseServer
from tests.test_play import first_sound, offset_of
from voicecoach import SAMPLE_RATE
from voicecoach.compile import Options, Say, Timed, compile_routine, rep_milestones
from voicecoach.history import SessionEntry, Target, coaching, record, summarize
from voicecoach.load import iter_bundled, load, loads
from voicecoach.pipeline import prepare

SR = SAMPLE_RATE


def spoken(script_cues: tuple[object, ...]) -> list[str]:
    out = []
    for cue in script_cues:
        if isinstance(cue, Say):
            out.append(cue.text)
        elif isinstance(cue, Timed):
            out.extend(m.cue.text for m in cue.marks if isinstance(m.cue, Say))
    return out


# -- Names and place ----------------------------------------------------------------------

@pytest.mark.parametrize(("routine", "variation"),
                         [(r.id, v) for r in iter_bundled() for v in r.variation_names])
def test_every_exercise_is_announced_with_its_place(routine: str, variation: str) -> None:
    loaded = load(routine)
    texts = spoken(compile_routine(loaded, variation).cues)
    exercises = [s for s in loaded.steps if s.announce and (s.only is None or variation in s.only)]
    assert exercises
    for i, step in enumerate(exercises, 1):
        said = f"Exercise {i} of {len(exercises)}: {step.announce}." if len(exercises) > 1 \
            else f"The exercise: {step.announce}."
        assert said in texts
        # announced before the step's own instructions
        assert texts.index(said) < texts.index(next(t for t in texts[texts.index(said) + 1:]))


def test_the_articles_exercise_names_are_spoken() -> None:
    upper = " ".join(t for t in spoken(compile_routine(load("upper-back-knot")).cues)
                     if t.startswith("Exercise")).lower()
    for name in ("side-bend stretch", "pull-up bar", "shoulder shrugs", "foam roller",
                 "downward-facing dog"):
        assert name in upper
    assert "The exercise: Roll out and lift." in spoken(compile_routine(load("mid-back-knot")).cues)


def test_authors_can_rename_or_silence_an_announcement() -> None:
    routine = loads("title: T\nsteps:\n  - name: Setup\n    announce: false\n"
                    "  - name: Cat-cow stretch\n    announce: Cat and cow\n    hold: 5\n"
                    "  - name: Child's pose\n    hold: 5\n")
    texts = spoken(compile_routine(routine).cues)
    assert "Exercise 1 of 2: Cat and cow." in texts
    assert "Exercise 2 of 2: Child's pose." in texts
    assert not any("Setup" in t for t in texts)
    routine = loads("title: T\ndefaults:\n  announce: false\nsteps:\n  - name: A\n    hold: 5\n")
    assert not any(t.startswith(("Exercise", "The exercise")) for t in spoken(compile_routine(routine).cues))


# -- Milestones ---------------------------------------------------------------------------

@pytest.mark.parametrize(("reps", "expected"), [
    (30, {16: "Halfway.", 26: "Five to go.", 30: "Last one!"}),
    (14, {8: "Halfway.", 12: "Three to go.", 14: "Last one!"}),
    (10, {6: "Halfway.", 8: "Three to go.", 10: "Last one!"}),
    (5, {3: "Halfway.", 5: "Last one!"}),
    (1, {1: "Last one!"}),
])
def test_rep_milestones(reps: int, expected: dict[int, str]) -> None:
    assert rep_milestones(reps) == expected


def test_mid_back_thirty_reps_carry_milestones() -> None:
    timeline = prepare("mid-back-knot").timeline
    said = {e.value: e.label for e in timeline.events if e.value in ("Halfway.", "Five to go.", "Last one!")}
    assert said == {"Halfway.": "rep 16 of 30", "Five to go.": "rep 26 of 30", "Last one!": "rep 30 of 30"}


def test_milestones_follow_the_routine_and_never_slow_a_rep() -> None:
    base = "title: T\nsteps:\n  - name: A\n    reps: {reps}\n{extra}    tempo:\n      - say: Up.\n        seconds: {s}\n"
    off = loads(base.format(reps=12, extra="    milestones: false\n", s=2))
    assert "Last one!" not in spoken(compile_routine(off).cues)
    on = loads(base.format(reps=4, extra="    milestones: true\n", s=2))
    assert "Last one!" in spoken(compile_routine(on).cues)
    assert "Last one!" not in spoken(compile_routine(loads(base.format(reps=4, extra="", s=2))).cues)
    # no room: a 1.2-second phase holds "12" and "Up." but not "Last one!" as well
    tight = prepare(loads(base.format(reps=12, extra="", s=1.2))).timeline
    speech = [e for e in tight.events if e.kind == "speech" and e.step == "A"]
    assert all(a.end <= b.start for a, b in zip(speech, speech[1:], strict=False))
    reps = [e for e in speech if e.value.isdigit()]
    assert [b.start - a.start for a, b in zip(reps, reps[1:], strict=False)] == [round(1.2 * SR)] * 11
    assert "Last one!" not in [e.value for e in speech]


# -- Holds ------------------------------------------------------------------------------------

def test_a_short_hold_drops_what_would_come_before_its_middle() -> None:
    text = ("title: T\nsteps:\n  - name: A\n    hold: {s}\n    during:\n      - halfway: Halfway.\n"
            "      - left: 10\n        say: Ten seconds left.\n")
    short = spoken(compile_routine(loads(text.format(s=12))).cues)
    assert "Halfway." in short and "Ten seconds left." not in short
    equal = spoken(compile_routine(loads(text.format(s=20))).cues)
    assert "Ten seconds left." not in equal  # it would be said on top of "Halfway."
    long = prepare(loads(text.format(s=30))).timeline.events
    order = [e.value for e in long if e.kind == "speech"]
    assert order.index("Halfway.") < order.index("Ten seconds left.")


# -- Brief sessions -----------------------------------------------------------------------

def test_a_brief_mid_back_session_is_shorter_and_keeps_every_safety_line() -> None:
    routine = load("mid-back-knot")
    for variation in routine.variation_names:
        full = prepare(routine, variation).timeline
        brief = prepare(routine, variation, Options(brief=True)).timeline
        assert full.duration_s - brief.duration_s >= 40
        brief_texts = {e.value for e in brief.events}
        for line in routine.safety_start + routine.safety_end:
            text = line.for_variation(variation)
            assert text and text in brief_texts
        assert "see an expert" in " ".join(brief_texts)
        for line in routine.intro:
            assert line.for_variation(variation) not in brief_texts
        full_instructions = [e.value for e in full.events if e.step != "Introduction" and e.kind == "speech"
                             and not e.value.startswith("Dr. Claire")]
        assert [t for t in full_instructions if t in brief_texts] == full_instructions


def test_purpose_marks_what_a_brief_session_leaves_out() -> None:
    routine = loads("title: T\nintro:\n  - text: Never on an injury.\n    purpose: safety\n"
                    "  - Some history.\nsteps:\n  - name: A\n    say:\n"
                    "      - text: Why this works.\n        purpose: background\n      - Do this.\n")
    brief = spoken(compile_routine(routine, options=Options(brief=True)).cues)
    assert "Never on an injury." in brief and "Do this." in brief
    assert "Some history." not in brief and "Why this works." not in brief
    full = spoken(compile_routine(routine).cues)
    assert "Some history." in full and "Why this works." in full


# -- History that means what it says, and progress spoken -----------------------------------

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def entry(ended: str, played_s: float, days_ago: float = 0, routine: str = "r") -> SessionEntry:
    return SessionEntry(routine, "R", "standard", "middle", NOW - timedelta(days=days_ago), played_s,
                        ended, None if ended == "completed" else "A", 100.0)  # type: ignore[arg-type]


def test_what_counts_toward_the_week() -> None:
    target = Target(3, 4)
    entries = [entry("completed", 100), entry("stopped", 4), entry("stopped", 50), entry("stopped", 49)]
    summary = summarize(entries, "r", "R", target, NOW, weeks=1)
    assert summary.this_week.sessions == 2  # completed, and stopped at half; not 4 s or 49 s
    assert summary.total_sessions == 4


def test_coaching_lines_follow_the_history(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    target = Target(3, 4)
    first = coaching("r", target, NOW, db, tz=UTC)
    assert first.greeting == ("Welcome: your first session this week, of three to four.",)
    assert first.farewell == ("That makes one this week, of three to four.",)
    for days in (0.1, 0.2):
        assert record(entry("completed", 100, days), db) is None
    third = coaching("r", target, NOW, db, tz=UTC)
    assert third.greeting == ("Welcome back: your third session this week, of three to four.",)
    assert third.farewell == ("That makes three this week, of three to four.", "You are on target for the week.")
    assert third.completed == 2
    assert coaching("r", None, NOW, db).greeting == ()  # no dosage, no progress to tell


SHORT_WITH_DOSAGE = """\
title: Quick one
intro:
  - This routine loosens the neck, and the reasons are many and varied.
safety:
  start: [Stop if it hurts.]
steps:
  - name: Nod
    hold: 2
dosage:
  say: [Do this daily.]
  sessions_per_week: 3-4
"""


def _play(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicecoach", "play", str(path)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.sound
def test_four_plays_become_brief_and_the_progress_line_changes(pulse_server: PulseServer,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "quick.yaml"
    path.write_text(SHORT_WITH_DOSAGE)
    env = {**os.environ, **pulse_server.env, "VOICECOACH_DATA_DIR": str(tmp_path / "data")}
    db = tmp_path / "data" / "history.sqlite3"
    routine = load(str(path))
    heard = []
    for run in range(4):
        told = coaching(routine.id, Target(3, 4), datetime.now(UTC), db)
        brief = run == 3
        greeting = told.greeting + (("A brief session today: you know the background by now.",)
                                    if brief else ())
        expected = prepare(routine, options=Options(brief=brief, greeting=greeting,
                                                    farewell=told.farewell))
        recording = pulse_server.record()
        result = _play(path, env)
        recorded = recording.stop()
        assert result.returncode == 0, result.stderr
        assert ("Brief session" in result.stderr) == brief
        reference = np.concatenate(list(expected.rendering.chunks()))
        lag = first_sound(recorded) - first_sound(reference)
        # what was played is the session with this run's progress lines: every event is
        # where this run's timeline puts it, the greeting and the farewell among them
        events = expected.timeline.events
        offsets = [offset_of(recorded, reference, e.start, lag, SR // 4) for e in events]
        assert max(offsets) - min(offsets) <= 0.020 * SR, offsets
        for e in events:
            if e.value in greeting + told.farewell:
                piece = reference[e.start: e.end]
                at = e.start + offsets[0]
                assert np.corrcoef(recorded[at: at + piece.size], piece)[0, 1] > 0.9, e.value
        heard.append((expected.timeline.duration_s, told.greeting))
    assert [g for _, g in heard] == [
        ("Welcome: your first session this week, of three to four.",),
        ("Welcome back: your second session this week, of three to four.",),
        ("Welcome back: your third session this week, of three to four.",),
        ("Welcome back: your fourth session this week, of three to four.",),
    ]
    assert heard[3][0] < heard[2][0] - 3  # the background left out


# -- The timeline keeps its structure --------------------------------------------------------

def test_holds_rests_reps_and_sides_are_spans_the_status_line_reads() -> None:
    from collections import Counter

    from voicecoach.play import Coach

    routine = loads("title: T\nsteps:\n  - name: A\n    sides: [left, right]\n    hold: 5\n"
                    "    sets: 2\n    rest: 4\n  - name: B\n    reps: 3\n    tempo:\n"
                    "      - say: Up.\n        seconds: 2\n      - hold: 1\n")
    timeline = prepare(routine).timeline
    assert Counter(s.kind for s in timeline.spans) == {"hold": 4 + 3, "rest": 1, "side": 4, "rep": 3}
    tones = [e for e in timeline.events if e.kind == "tone"]
    for span in timeline.spans:
        if span.kind in ("hold", "rest"):  # exact, from its tone to the next hold-end tone
            assert any(t.start == span.start and t.value in ("hold_start", "rest") for t in tones)
            assert any(t.start == span.end and t.value == "hold_end" for t in tones)
            assert span.end - span.start == {("A", "hold"): 5, ("A", "rest"): 4, ("B", "hold"): 1}[
                (next(e.step for e in timeline.events if e.start == span.start), span.kind)] * SR
    rest = next(s for s in timeline.spans if s.kind == "rest")
    hold = next(s for s in timeline.spans if s.kind == "hold")

    class At:  # the status line is a pure function of the position; no device needed here
        paused = False
        position_samples = 0

    player = At()
    coach = Coach(prepare(routine), player)  # type: ignore[arg-type]
    player.position_samples = rest.start + SR // 2
    assert "rest 4 s left" in coach.status()
    player.position_samples = hold.end - SR // 2
    assert "hold 1 s left" in coach.status()  # rounded up: 0 only when it has ended
    assert "left side" in coach.status()
