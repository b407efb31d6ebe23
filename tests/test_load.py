"""Loading: bundled routines load; every bad file reports every problem, located."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicecoach.errors import RoutineError, UsageError, VoicecoachError
from voicecoach.load import MAX_BYTES, bundled_ids, load, load_file, loads
from voicecoach.model import Range

CASES = Path(__file__).parent / "cases" / "bad"


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_structures_only_raise_our_error(data: object) -> None:
    """Whatever the structure, loading and compiling raise only the project's error type."""
    import yaml

    from voicecoach.compile import compile_routine

    text = yaml.safe_dump({"title": "T", "steps": [{"name": "A"}], **data} if isinstance(data, dict) else data)
    try:
        routine = loads(text, "fuzz.yaml")
        for v in routine.variation_names:
            compile_routine(routine, v)
    except VoicecoachError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_text_only_raises_our_error(text: str) -> None:
    try:
        loads(text, "fuzz.yaml")
    except VoicecoachError:
        pass


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step_values)
def test_fuzz_steps_compile_and_schedule_or_raise_our_error(step: dict) -> None:  # type: ignore[type-arg]
    """Near-valid steps reach the compiler and the scheduler: still only our error."""
    import yaml

    from voicecoach.compile import compile_routine
    from voicecoach.schedule import schedule

    text = yaml.safe_dump({"title": "T", "steps": [step]})
    try:
        routine = loads(text, "fuzz.yaml")
        script = compile_routine(routine)
        schedule(script, lambda text: 2000 + 10 * len(text), lambda kind: 4000)
    except VoicecoachError:
        pass


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
