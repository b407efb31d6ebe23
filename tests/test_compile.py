"""Compiling and scheduling: exact holds and tempo, ranges by level, every article fact spoken.

These are the pure stages, run on plain data: no speech is made. A phrase lasts as long as
its text at a steady speaking rate, about what the default voice takes; the tones are the
shipped ones. What real phrase lengths do is tested end to end (test_render, test_golden).
"""

from __future__ import annotations

import itertools

import pytest

from voicecoach import SAMPLE_RATE
from voicecoach.compile import Options, Say, Timed, Tone, compile_routine
from voicecoach.errors import RoutineError, UsageError
from voicecoach.load import load, loads
from voicecoach.model import Routine
from voicecoach.pipeline import DEFAULT_OPTIONS, is_plain
from voicecoach.render import ToneBank
from voicecoach.schedule import Timeline, schedule
from voicecoach.spec import VoiceSettings

SR = SAMPLE_RATE
SECONDS_PER_CHARACTER = 0.07
"""About 170 words a minute: a phrase's length here, in place of the voice's."""
TONES = ToneBank()


def timeline_of(routine: str | Routine, variation: str | None = None,
                options: Options = DEFAULT_OPTIONS) -> Timeline:
    """compile then schedule, as `prepare` runs them, with lengths from plain data."""
    loaded = load(routine) if isinstance(routine, str) else routine
    return schedule(compile_routine(loaded, variation, options),
                    lambda text: round(len(text) * SECONDS_PER_CHARACTER * SR), TONES.length,
                    adapt=not is_plain(options, VoiceSettings()))


def holds(timeline: Timeline) -> list[tuple[int, int]]:
    """(start, end) sample pairs of every hold, from its start tone to its end tone."""
    starts = [e.start for e in timeline.events if e.kind == "tone" and e.value == "hold_start"]
    ends = [e.start for e in timeline.events if e.kind == "tone" and e.value == "hold_end"]
    return list(zip(starts, ends, strict=True))


def spoken(timeline: Timeline) -> str:
    return " ".join(e.value for e in timeline.events if e.kind == "speech")


@pytest.mark.parametrize(("level", "seconds", "reps"), [("low", 20, 12), ("middle", 25, 14), ("high", 30, 15)])
def test_level_picks_within_ranges_and_holds_are_exact(level: str, seconds: int, reps: int) -> None:
    timeline = timeline_of("upper-back-knot", options=Options(level=level))
    side_bend = [(a, b) for a, b in holds(timeline) if b - a > 5 * SR]
    # side bend left and right, hang, foam roller x3 at middle (2-4), downward dog (30-45)
    assert [b - a for a, b in side_bend[:3]] == [seconds * SR] * 3
    dog = {"low": 30, "middle": 38, "high": 45}[level]
    assert side_bend[-1][1] - side_bend[-1][0] == dog * SR
    shrug_counts = [e.value for e in timeline.events if e.step == "Shoulder shrugs" and e.value.isdigit()]
    assert shrug_counts == [str(n) for n in range(1, reps + 1)]
    assert f"Hold for {seconds} seconds." in spoken(timeline)


def test_overrides_apply_to_every_hold_and_rep_count() -> None:
    timeline = timeline_of("upper-back-knot", options=Options(hold_s=15, reps=3))
    long_holds = [b - a for a, b in holds(timeline) if b - a > 2 * SR]
    assert long_holds and all(length == 15 * SR for length in long_holds)
    counts = [e.value for e in timeline.events if e.step == "Shoulder shrugs" and e.value.isdigit()]
    assert counts == ["1", "2", "3"]
    mid = timeline_of("mid-back-knot", options=Options(reps=300))
    assert [e.value for e in mid.events if e.value.isdigit()][-1] == "300"


def test_announcements_inside_a_hold_never_stretch_it() -> None:
    timeline = timeline_of("upper-back-knot")
    start, end = holds(timeline)[-1]  # downward dog, 38 s
    assert end - start == 38 * SR
    inside = [e for e in timeline.events if start < e.start < end]
    assert [e.value for e in inside] == ["Halfway there.", "Ten seconds left.", "countdown", "countdown", "countdown"]
    halfway, ten_left, *ticks = inside
    assert halfway.start == start + (end - start) // 2
    assert ten_left.start == end - 10 * SR
    assert [t.start for t in ticks] == [end - 3 * SR, end - 2 * SR, end - SR]
    assert all(e.end <= end for e in inside)


def test_halfway_in_an_odd_hold_is_its_middle_to_the_sample() -> None:
    """25 s: halfway at 12.5 s, not at the whole second before it."""
    timeline = timeline_of("upper-back-knot", options=Options(hold_s=25))
    start, end = holds(timeline)[-1]
    halfway = next(e for e in timeline.events if start < e.start < end)
    assert (end - start, halfway.value, halfway.start - start) == (25 * SR, "Halfway there.",
                                                                  int(12.5 * SR))


def test_a_fractional_hold_lasts_to_the_nearest_sample() -> None:
    """--hold 20.0003 is 441006.615 samples: 441007 of them, not the 441006 truncation gives."""
    timeline = timeline_of("upper-back-knot", options=Options(hold_s=20.0003))
    long_holds = [b - a for a, b in holds(timeline) if b - a > 10 * SR]
    assert long_holds and set(long_holds) == {441007}
    assert "Hold for 20.0003 seconds." in spoken(timeline)


def test_a_cue_that_cannot_fit_is_an_error_naming_the_line() -> None:
    text = (
        "title: T\nsteps:\n  - name: Short\n    hold: 8\n    during:\n"
        "      - left: 1\n        say: Ten seconds left.\n"
    )
    with pytest.raises(RoutineError) as info:
        timeline_of(loads(text, "short.yaml"))
    message = str(info.value)
    assert message.startswith("short.yaml:6:9: steps[0].during[0]: 'Ten seconds left.' (")
    assert message.endswith("s) does not fit in the 8-second window it is placed in; "
                            "make the window longer or the words shorter")


def test_announcements_without_a_moment_in_a_short_hold_are_left_out() -> None:
    timeline = timeline_of("upper-back-knot", options=Options(hold_s=9))
    start, end = holds(timeline)[0]
    inside = [e.value for e in timeline.events if start < e.start < end]
    assert inside == ["countdown", "countdown", "countdown"]


def test_tempo_phases_have_exact_lengths() -> None:
    timeline = timeline_of("mid-back-knot", options=Options(reps=3))
    counts = [e for e in timeline.events if e.value in ("1", "2", "3")]
    rep_lengths = {b.start - a.start for a, b in itertools.pairwise(counts)}
    tone = next(e for e in timeline.events if e.value == "switch")
    # reach 3 s, lift 2 s, down 1.5 s, switch tone + pause, lift 2 s, down 1.5 s, back 3 s
    expected = round(3 * SR) + 2 * (2 * SR + round(1.5 * SR)) + (tone.end - tone.start) + round(0.2 * SR) + 3 * SR
    assert rep_lengths == {expected}


def test_arms_alternate_inside_each_rep_with_a_switch_cue() -> None:
    timeline = timeline_of("mid-back-knot", options=Options(reps=2))
    rep = [e.value for e in timeline.events if e.step == "Roll out and lift" and "rep 1 of 2" in e.label]
    assert rep == ["1", "Reach out.", "Lift left.", "Down.", "switch", "Lift right.", "Down.", "Back."]


def test_sides_switch_with_a_cue_and_fill_the_side() -> None:
    timeline = timeline_of("upper-back-knot")
    side_bend = [e for e in timeline.events if e.step == "Side-bend stretch"]
    said = [e.value for e in side_bend]
    assert "Place your left hand on the right, top side of your head." in said
    assert "Place your right hand on the left, top side of your head." in said
    switch = said.index("switch")
    assert said[switch + 1] == "Lightly release. Now your right side."
    assert said.index("Place your left hand on the right, top side of your head.") < switch


def test_variations_pick_their_own_lines() -> None:
    kneeling = spoken(timeline_of("mid-back-knot", "kneeling"))
    wall = spoken(timeline_of("mid-back-knot", "wall"))
    floor = spoken(timeline_of("mid-back-knot", "floor"))
    assert "Kneel on the ground." in kneeling and "Kneel on the ground." not in wall
    assert "Stand facing a wall" in wall and "Stand facing a wall" not in floor
    assert "Lie flat on your stomach" in floor and "foam roller" not in floor.split("This session")[1]
    with pytest.raises(UsageError) as info:
        compile_routine(load("mid-back-knot"), "walls")
    assert str(info.value) == (
        "unknown variation 'walls' for mid-back-knot: did you mean 'wall'? valid: kneeling, wall, floor"
    )


# Every step, hold, rep count, switch, variation, dosage and safety note of the articles.
ARTICLE_FACTS = {
    ("mid-back-knot", "kneeling"): [
        "Kneel on the ground.", "foam roller in front of you, horizontally",
        "palms open and facing each other, and your thumbs pointing up",
        "gently roll your arms outward", "back flat and your head parallel to the floor, looking down",
        "only your arms move", "one to two inches", "Then the other arm",
        "use your mid-back muscles", "Keep your neck relaxed", "don't shrug your shoulders up into your ears",
        "30 reps, three or four times a week", "after three to four weeks",
        "Consistency is key", "If kneeling is a problem", "standing with the foam roller on a wall",
        "lying flat on your stomach", "see an expert", "nerve damage", "from your neck",
        "high-density, 18-inch roller", "any roller will do", "lacks stability",
        "shoulder stabilisers and your rotator cuff", "slouching",
    ],
    ("mid-back-knot", "wall"): ["Stand facing a wall", "along the wall", "30 reps, three or four times a week"],
    ("mid-back-knot", "floor"): ["Lie flat on your stomach", "slide your hands across the floor",
                                  "no equipment", "30 reps, three or four times a week"],
    ("upper-back-knot", "standard"): [
        "Sit or stand with your feet together", "Place your left hand on the right, top side of your head",
        "Keep your shoulders down and your lower body still", "toward your left shoulder",
        "Turn your head gradually", "look down toward your left side", "Hold for 25 seconds",
        "Lightly release", "Now your right side", "overhand, shoulder-width grip",
        "Bend your knees and cross your lower legs", "Slowly lower yourself back down",
        "Sit comfortably in a chair", "gaze fixed forward", "arms hang straight down at your sides",
        "as high as possible, hold for a full second", "slowly lower them back down",
        "Do not round your shoulders or bend your elbows", "14 times",
        "Lie on your back with your shoulders across the foam roller", "feet flat on the floor",
        "Tighten your core", "straight line from your hips to your shoulders",
        "until you find a knot", "another area of tightness", "Hold again",
        "loosened up your whole upper back", "Do not roll your neck across the foam roller",
        "stress on your vertebrae", "hands shoulder-width apart and your feet hip-width apart",
        "straighten your arms", "Raise your hips", "weight back onto your heels",
        "feet flat on the floor", "rotate your shoulder blades inward", "Hold for 38 seconds",
        "Slowly release", "trapezius", "constrict forcefully",
    ],
}


@pytest.mark.parametrize(("routine", "variation"), sorted(ARTICLE_FACTS))
def test_every_article_fact_reaches_the_ears(routine: str, variation: str) -> None:
    text = spoken(timeline_of(routine, variation))
    missing = [fact for fact in ARTICLE_FACTS[(routine, variation)] if fact not in text]
    assert missing == []


def test_compile_is_pure_and_flat() -> None:
    script = compile_routine(load("upper-back-knot"), options=Options(level="low"))
    assert script == compile_routine(load("upper-back-knot"), options=Options(level="low"))
    kinds = {type(c).__name__ for c in script.cues}
    assert kinds <= {"Say", "Tone", "Wait", "Chapter", "Timed", "Begin", "End"}
    timed = [c for c in script.cues if isinstance(c, Timed)]
    assert all(isinstance(m.cue, (Say, Tone)) for t in timed for m in t.marks)
