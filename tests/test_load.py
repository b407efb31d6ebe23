"""Loading: bundled routines load; every bad file reports every problem, located."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from voicecoach import SAMPLE_RATE
from voicecoach.compile import Chapter, Say, Script
from voicecoach.errors import RoutineError, UsageError, VoicecoachError
from voicecoach.load import MAX_BYTES, bundled_ids, load, load_file, loads
from voicecoach.model import Range, Routine

CASES = Path(__file__).parent / "cases" / "bad"
SR = SAMPLE_RATE


def test_bundled_routines_load() -> None:
    assert bundled_ids() == ["mid-back-knot", "upper-back-knot"]
    mid = load("mid-back-knot")
    assert mid.variation_names == ("kneeling", "wall", "floor")
    assert mid.default_variation == "kneeling"
    upper = load("upper-back-knot")
    assert upper.variation_names == ("standard",)
    assert upper.steps[0].hold == Range(20, 30)
    assert upper.steps[0].sides == ("left", "right")


@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.yaml")))
def test_bad_routine_reports_every_problem(case: str, in_repo: Path) -> None:
    expected = (CASES / f"{case}.expected").read_text().rstrip("\n")
    with pytest.raises(RoutineError) as info:
        load_file(Path("tests/cases/bad") / f"{case}.yaml")
    assert str(info.value) == expected


def test_alias_bomb_fails_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    started = time.perf_counter()
    with pytest.raises(RoutineError, match="anchors and aliases"):
        loads("\n".join(lines), "bomb.yaml")
    assert time.perf_counter() - started < 1.0


def test_size_and_depth_are_capped() -> None:
    with pytest.raises(RoutineError, match="larger than 256 KiB"):
        loads("title: x\n" + "#" * MAX_BYTES, "big.yaml")
    with pytest.raises(RoutineError, match="nested deeper than 32 levels"):
        loads("title: " + "[" * 200 + "]" * 200, "deep.yaml")


def test_unknown_routine_names_the_bundled_ones() -> None:
    with pytest.raises(UsageError) as info:
        load("mid-back")
    assert str(info.value) == (
        "unknown routine 'mid-back': did you mean 'mid-back-knot'? bundled routines: "
        "mid-back-knot, upper-back-knot (or give a path to a .yaml file)"
    )
    with pytest.raises(UsageError, match="no such routine file: nowhere.yaml"):
        load("nowhere.yaml")


def test_ranges_in_words_and_digits() -> None:
    r = loads("title: T\nsteps:\n  - name: A\n    hold: 20 to 30\n  - name: B\n    hold: '20-30'\n")
    assert r.steps[0].hold == Range(20, 30) == r.steps[1].hold
    with pytest.raises(RoutineError, match=r"range '30-20' goes down"):
        loads("title: T\nsteps:\n  - name: A\n    hold: 30-20\n")


def test_duplicate_keys_and_non_text_keys() -> None:
    with pytest.raises(RoutineError) as info:
        loads("title: T\ntitle: U\nsteps:\n  - name: A\n    1: x\n", "dup.yaml")
    assert str(info.value) == (
        "dup.yaml:2:1: title: duplicate key 'title'\n"
        "dup.yaml:5:5: steps[0].?: keys must be text, got 1"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"title: caf\xe9\n")
    with pytest.raises(RoutineError, match="not UTF-8 text"):
        load_file(path)


yaml_scalars = st.one_of(
    st.integers(-10**15, 10**15), st.floats(allow_nan=True), st.text(max_size=20),
    st.booleans(), st.none(), st.sampled_from(["20-30", "20 to 30", "30-20", "{side}", "{", ".inf"]),
)
keys = st.sampled_from([
    "title", "steps", "name", "hold", "reps", "tempo", "say", "seconds", "sides", "arms",
    "phases", "during", "halfway", "left", "countdown", "variations", "default", "only",
    "text", "repeat", "sets", "rest", "between", "get_ready", "dosage", "safety", "start",
    "sounds", "defaults", "after", "switch", "count", "bogus",
])
documents = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)


def assert_located(error: VoicecoachError, text: str) -> None:
    """A refusal names every problem at a place in the document: file:line:col."""
    assert isinstance(error, RoutineError), error
    assert error.problems
    lines = text.count("\n") + 1
    for problem in error.problems:
        assert problem.file == "fuzz.yaml" and problem.message, problem
        assert 1 <= problem.line <= lines + 1 and problem.column >= 1, (problem, lines)


def loaded_or_refused_in_place(text: str) -> Routine | None:
    """The routine in `text`, or None where it is refused with every problem located."""
    try:
        routine = loads(text, "fuzz.yaml")
    except VoicecoachError as e:
        assert_located(e, text)
        event("refused")
        return None
    event("accepted")
    return routine


def assert_compiles_in_order(routine: Routine, variation: str, script: Script) -> None:
    """Introduction, the routine's steps that this variation does (in the file's order),
    Finish; the title said first."""
    chapters = [c.title for c in script.cues if isinstance(c, Chapter)]
    steps = [s.name for s in routine.steps if s.only is None or variation in s.only]
    assert chapters == ["Introduction", *steps, "Finish"]
    assert script.cues[1] == Say(routine.title.rstrip(".") + ".", "Introduction")
    assert (script.routine_id, script.variation) == (routine.id, variation)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_structures_are_refused_in_place_or_load_as_written(data: object) -> None:
    """Whatever the structure: refused with every problem located, or loaded as written
    (its title, its steps' names, one default variation) and compiled for every variation."""
    import yaml

    from voicecoach.compile import compile_routine

    document = {"title": "T", "steps": [{"name": "A"}], **data} if isinstance(data, dict) else data
    text = yaml.safe_dump(document)
    routine = loaded_or_refused_in_place(text)
    if routine is None:
        return
    assert isinstance(document, dict)  # a document that is not a mapping is never a routine
    assert routine.title == document["title"]
    assert [s.name for s in routine.steps] == [s["name"] for s in document["steps"]]
    assert [v.default for v in routine.variations].count(True) == 1
    if document.get("variations"):  # none, or an empty mapping: the implicit "standard"
        assert list(routine.variation_names) == list(document["variations"])
    for variation in routine.variation_names:
        try:
            script = compile_routine(routine, variation)
        except VoicecoachError as e:  # only a session too big to make
            assert "session would be" in str(e), e
            continue
        assert_compiles_in_order(routine, variation, script)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_text_is_refused_in_place_or_is_a_routine(text: str) -> None:
    routine = loaded_or_refused_in_place(text)
    if routine is None:
        return
    assert routine.title.strip() and routine.steps and routine.variation_names


step_values = st.fixed_dictionaries({"name": st.just("A")}, optional={
    "hold": st.one_of(st.integers(-5, 5000), st.sampled_from(["20-30", "1 to 2", "x", "3-1"])),
    "reps": st.one_of(st.integers(-1, 2000), st.sampled_from(["2-3", "12 to 15"])),
    "tempo": st.lists(st.fixed_dictionaries({}, optional={
        "say": st.sampled_from(["Up.", "{rep}", "{arm}", "{side}", ""]),
        "seconds": st.one_of(st.floats(-1, 10), st.just("1-2")),
        "hold": st.integers(0, 3),
        "arms": st.just(["left", "right"]),
        "phases": st.just([{"say": "Lift {arm}.", "seconds": 2}]),
    }), max_size=3),
    "during": st.lists(st.fixed_dictionaries({}, optional={
        "halfway": st.just("Half."), "left": st.integers(-1, 40), "after": st.integers(0, 40),
        "say": st.just("Now."), "countdown": st.integers(0, 12),
    }), max_size=3),
    "sides": st.sampled_from([["left", "right"], ["left"], []]),
    "repeat": st.integers(0, 3), "sets": st.integers(0, 3), "rest": st.integers(0, 20),
    "get_ready": st.floats(-1, 10), "between": st.just(["Again."]), "say": st.just(["Go {side}."]),
})


def expected_amount(value: object) -> float:
    """What a count or range in the file means at the middle level, worked out here
    independently of the code: the middle of a range, rounded half up."""
    if isinstance(value, str):
        low, high = (float(x) for x in value.replace(" to ", "-").split("-"))
        return float(math.floor((low + high) / 2 + 0.5))
    assert isinstance(value, int | float)
    return float(value)


SPEECH = 2000  # samples for every phrase, plus 10 a character
TONE = 4000


def check_schedule(step: dict) -> None:  # type: ignore[type-arg]
    """Load, compile and schedule a routine of this one step, and check what came out:
    nothing overlaps, every hold is exactly as long as the file says, as many times as its
    sides, repeats and sets, and the reps are counted up to the count the file gives. A
    refusal must name its place; VoicecoachError propagates for the caller to judge."""
    import yaml

    from voicecoach.compile import compile_routine
    from voicecoach.schedule import schedule

    text = yaml.safe_dump({"title": "T", "steps": [step]})
    timeline = schedule(compile_routine(loads(text, "fuzz.yaml")),
                        lambda words: SPEECH + 10 * len(words), lambda kind: TONE)
    events = timeline.events
    assert all(a.end <= b.start for a, b in itertools.pairwise(events)), "overlap"
    assert [s.title for s in timeline.sections] == ["Introduction", "A", "Finish"]
    assert timeline.duration_samples >= events[-1].end + SR  # and a second's tail
    times = max(1, len(step.get("sides") or ())) * step.get("repeat", 1) * step.get("sets", 1)
    tones = [e for e in events if e.kind == "tone" and e.step == "A"]
    if "hold" in step:
        hold = round(expected_amount(step["hold"]) * SR)
        starts = [e.start for e in tones if e.value == "hold_start"]
        ends = [e.start for e in tones if e.value == "hold_end"]  # a rest's too
        assert len(starts) == times
        assert [min(t for t in ends if t > start) - start for start in starts] == [hold] * times
        countdown = [d["countdown"] for d in step.get("during") or () if "countdown" in d]
        if countdown:
            ticks = [e.start for e in tones if e.value == "countdown"]
            n = min(countdown[0], hold // SR - 1)
            assert len(ticks) == n * times
            for start in starts:  # a tick in each of the last n whole seconds
                assert [t - start for t in ticks if start < t < start + hold] == [
                    hold - k * SR for k in range(n, 0, -1)]
    if "reps" in step and step.get("tempo"):
        reps = int(expected_amount(step["reps"]))
        counted = [e.value for e in events if e.kind == "speech" and e.value.isdigit()]
        if not any("{" in p.get("say", "") for p in step["tempo"]):  # a phase may say "{rep}" too
            assert counted == [str(n) for n in range(1, reps + 1)] * times


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step_values)
def test_fuzz_steps_are_refused_in_place_or_scheduled_exactly(step: dict) -> None:  # type: ignore[type-arg]
    """Near-valid steps reach the compiler and the scheduler: refused in place, or laid
    out exactly as written (check_schedule)."""
    try:
        check_schedule(step)
    except VoicecoachError as e:
        if "session would be" not in str(e):  # too big is refused before it is laid out
            assert_located(e, yaml_of(step))
        event("refused")
        return
    event("accepted: " + ", ".join(k for k in ("hold", "reps") if k in step))


def yaml_of(step: dict) -> str:  # type: ignore[type-arg]
    import yaml

    return yaml.safe_dump({"title": "T", "steps": [step]})


def written_range(low_and_width: tuple[int, int]) -> str:
    """`low-high` or `low to high`, as the README allows."""
    low, width = low_and_width
    return f"{low}{' to ' if width % 2 else '-'}{low + width}"


amounts = st.one_of(st.integers(1, 40),
                    st.tuples(st.integers(1, 30), st.integers(1, 10)).map(written_range))


common = {"sides": st.just(["left", "right"]), "repeat": st.integers(1, 3),
          "sets": st.integers(1, 3), "rest": st.integers(5, 20), "get_ready": st.integers(0, 5)}
def rest_with_sets(step: dict) -> dict:  # type: ignore[type-arg]
    return step if "sets" in step else {k: v for k, v in step.items() if k != "rest"}


valid_steps = st.one_of(
    st.fixed_dictionaries({"name": st.just("A"), "hold": amounts}, optional={
        **common, "during": st.tuples(st.integers(1, 10)).map(lambda n: [{"countdown": n[0]}])}),
    st.fixed_dictionaries({"name": st.just("A"), "reps": amounts, "tempo": st.lists(
        st.one_of(st.fixed_dictionaries({"say": st.sampled_from(["Up.", "Down.", "Rep {rep}."]),
                                         "seconds": st.integers(1, 3)}),
                  st.fixed_dictionaries({"hold": st.integers(1, 3)})), min_size=1, max_size=3)},
        optional=common),
).map(rest_with_sets)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_steps)
def test_fuzz_valid_steps_are_accepted_and_scheduled_exactly(step: dict) -> None:  # type: ignore[type-arg]
    """Steps inside every documented limit are all accepted, and laid out as written."""
    check_schedule(step)


def test_a_routine_that_passed_the_schema_is_not_checked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema check (and jsonschema's import) is remembered per routine text; an edit,
    or a routine that failed, is checked in full."""
    import subprocess
    import sys

    from voicecoach.cache import cache_dir

    monkeypatch.setenv("VOICECOACH_CACHE_DIR", str(tmp_path / "cache"))  # nothing remembered yet

    text = (Path(__file__).parent / "cases" / "short.yaml").read_text(encoding="utf-8")
    routine = tmp_path / "short.yaml"
    routine.write_text(text, encoding="utf-8")
    probe = ("import sys; from pathlib import Path; from voicecoach.load import load_file; "
             f"load_file(Path({str(routine)!r})); print('jsonschema' in sys.modules)")

    def imports_jsonschema() -> bool:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             check=True).stdout
        return out.strip() == "True"

    before = set((cache_dir() / "checked").glob("*.ok"))
    assert imports_jsonschema()
    assert len(set((cache_dir() / "checked").glob("*.ok")) - before) == 1
    assert not imports_jsonschema()  # the same text again
    routine.write_text(text.replace("title:", "titel:", 1), encoding="utf-8")
    with pytest.raises(RoutineError, match="unknown key 'titel'"):
        load_file(routine)
    with pytest.raises(RoutineError, match="unknown key 'titel'"):  # never remembered
        load_file(routine)
    assert len(set((cache_dir() / "checked").glob("*.ok")) - before) == 1


@pytest.mark.parametrize("text", ["title: [unclosed\n", "a: b\n c: d\n", "- x\ny: 1\n"])
def test_yaml_errors_read_the_same_whichever_parser_found_them(text: str) -> None:
    """libyaml parses on the fast path; what it refuses is reported in PyYAML's words."""
    import yaml

    with pytest.raises(RoutineError) as caught:
        loads(text, "bad.yaml")
    try:
        list(yaml.parse(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        assert mark is not None
        expected = f"bad.yaml:{mark.line + 1}:{mark.column + 1}: invalid YAML: {e.problem or e.context}"
    assert str(caught.value).splitlines()[0].startswith(expected)


def test_the_bundled_routines_are_listed_as_checked_and_pass_the_schema() -> None:
    """routines/checked.txt spares a first export the schema check of a shipped routine;
    it must list exactly the routines as shipped, each valid."""
    import jsonschema
    import yaml

    from voicecoach.load import CHECKED_MANIFEST, schema_key
    from voicecoach.schema import SCHEMA

    folder = Path(__file__).resolve().parent.parent / "voicecoach" / "routines"
    listed = (folder / CHECKED_MANIFEST).read_text(encoding="utf-8")
    expected = ""
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
        expected += f"{schema_key(text)}  {path.name}\n"
    assert listed == expected, "stale: run scripts/check_routines.py"


def test_a_bundled_routine_loads_without_jsonschema(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    probe = ("import sys; from voicecoach.load import load; load('upper-back-knot'); "
             "print('jsonschema' in sys.modules)")
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "False"
