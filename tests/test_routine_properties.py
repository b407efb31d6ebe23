"""Issue 11's contract as properties, through the command line a person uses.

(a) Loading never raises anything but the project's errors, whatever the document.
(b) Whatever `validate` accepts, `show --json` accepts: with the defaults, with every
    option at the ends of its range (--hold 1 and 3600, --reps 1 and 1000, --level low
    and high) and for every variation.
(c) Its timeline is sorted by start, finite, inside the session, without overlaps, and
    every hold is exact: from its start tone to its end tone, the hold's seconds times
    the sample rate, rounded.

Routines for (b) and (c) are built by the strategies below, so a failure shrinks to a
small routine. (a) takes its documents from the generator of scripts/fuzz_routines.py
(generated and mutated routines, broken YAML), and (c) uses that script's timeline
checks: the fuzzer is the same contract, run by hand at scale.

Every `show` shares the session's phrase cache (tests/conftest.py), so the numbers that
--reps 1000 counts are synthesized once per run.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicecoach.cli import cli
from voicecoach.errors import VoicecoachError
from voicecoach.load import load_file

FUZZER = Path(__file__).resolve().parent.parent / "scripts" / "fuzz_routines.py"


def _fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_routines", FUZZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz = _fuzzer()

EXTREMES = [
    [],
    ["--hold", "1", "--reps", "1000", "--level", "low"],
    ["--hold", "3600", "--reps", "1", "--level", "high", "--brief"],
]
"""Every end of every range, in two runs (the options are independent of each other)."""

VARIATIONS = ["seated", "standing", "floor"]

# --------------------------------------------------------------------------- strategies


def _range(low: int, high: int) -> st.SearchStrategy[str]:
    return st.builds(lambda a, span, sep: f"{a}{sep}{a + span}",
                     st.integers(low, high), st.integers(0, 15), st.sampled_from(["-", " to "]))


def spoken(words: list[str]) -> st.SearchStrategy[str]:
    """A line: plain words, or a template using a word that makes sense here."""
    plain = st.sampled_from(fuzz.LINES[:10])
    if not words:
        return plain
    template = st.builds(lambda t, w: t.replace("{w}", "{" + w + "}"),
                         st.sampled_from(fuzz.TEMPLATES[:5]), st.sampled_from(words))
    return st.one_of(plain, template)


def lines(words: list[str], variations: list[str]) -> st.SearchStrategy[list[Any]]:
    line: st.SearchStrategy[Any] = spoken(words)
    if variations:
        by_variation = st.fixed_dictionaries(
            {"text": st.dictionaries(st.sampled_from(variations), spoken(words), min_size=1)},
            optional={"only": st.lists(st.sampled_from(variations), min_size=1, unique=True),
                      "purpose": st.sampled_from(fuzz.PURPOSES)})
        line = st.one_of(line, by_variation)
    return st.lists(line, min_size=1, max_size=2)


def announcements(words: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.one_of(
        st.fixed_dictionaries({"countdown": st.integers(1, 10)}),
        st.fixed_dictionaries({"halfway": spoken(words)}),
        st.fixed_dictionaries({"left": st.integers(1, 30), "say": spoken(words)}),
        st.fixed_dictionaries({"after": st.integers(0, 30), "say": spoken(words)}),
    )
    return st.lists(one, min_size=1, max_size=2)


def phases(words: list[str], arms: bool = True) -> st.SearchStrategy[list[dict[str, Any]]]:
    seconds = st.one_of(st.integers(1, 6), st.sampled_from([0.5, 1.5, 2.5]), _range(1, 4))
    timed = st.fixed_dictionaries({"seconds": seconds}, optional={"say": spoken(words)})
    hold = st.fixed_dictionaries({"hold": seconds}, optional={"say": spoken(words)})
    kinds: list[st.SearchStrategy[dict[str, Any]]] = [timed, hold]
    if arms:
        inner = [*words, "arm"]
        arm_phase: dict[str, st.SearchStrategy[Any]] = {
            "arms": st.sampled_from(fuzz.ARMS[:2]), "phases": phases(inner, arms=False)}
        kinds.append(st.fixed_dictionaries(arm_phase, optional={"switch": spoken(inner)}))
    return st.lists(st.one_of(kinds), min_size=1, max_size=2)


@st.composite
def steps(draw: st.DrawFn, variations: list[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["hold", "reps", "plain"]))
    step: dict[str, Any] = {"name": draw(st.sampled_from(fuzz.STEP_NAMES))}
    words = ["set", "sets"]
    if draw(st.booleans()):
        step["sides"] = ["left", "right"]
        words += ["side", "other_side"]
    words += {"hold": ["seconds"], "reps": ["reps"], "plain": []}[kind]
    if "sides" in step and draw(st.booleans()):
        step["switch"] = draw(spoken(words))
    if len(variations) > 0 and draw(st.booleans()):
        step["only"] = draw(st.lists(st.sampled_from(variations), min_size=1, unique=True))
    if draw(st.booleans()):
        step["say"] = draw(lines(words, variations))
    if draw(st.booleans()):
        step["get_ready"] = draw(st.sampled_from([3, 0, 0.5, 120]))
    if kind == "hold":
        step["hold"] = draw(st.one_of(st.integers(1, 60), _range(1, 60), st.sampled_from([2.5])))
        if draw(st.booleans()):
            step["during"] = draw(announcements(words))
    elif kind == "reps":
        step["reps"] = draw(st.one_of(st.integers(1, 12), _range(1, 12)))
        step["tempo"] = draw(phases([*words, "rep"]))
        if draw(st.booleans()):
            step["count"] = False
    if kind != "plain" and draw(st.booleans()):
        step["repeat"] = draw(st.sampled_from([2, "1-2"]))
        if draw(st.booleans()):
            step["between"] = draw(lines(words, variations))
    if draw(st.booleans()):
        step["sets"] = draw(st.sampled_from([2, 3, "2-3"]))
        if draw(st.booleans()):
            step["rest"] = draw(st.one_of(st.integers(1, 40), _range(1, 30)))
    if draw(st.booleans()):  # said once, after every set and side
        once = [w for w in words if w not in ("set", "side", "other_side")]
        step["after"] = draw(lines(once, variations))
    if draw(st.booleans()):
        step["milestones"] = draw(st.booleans())
    if draw(st.booleans()):
        step["announce"] = draw(st.one_of(st.booleans(), spoken([])))
    return step


@st.composite
def routines(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(VARIATIONS), max_size=3, unique=True))
    doc: dict[str, Any] = {"title": draw(st.sampled_from(fuzz.TITLES))}
    if names:
        default = draw(st.sampled_from(names))
        doc["variations"] = {n: {"title": n.title(), **({"default": True} if n == default else {})}
                             for n in names}
    if draw(st.booleans()):
        doc["intro"] = draw(lines([], names))
    if draw(st.booleans()):
        defaults: dict[str, Any] = {"get_ready": draw(st.sampled_from([2, 0]))}
        if draw(st.booleans()):
            defaults["during"] = draw(announcements(["seconds", "set", "sets"]))
        doc["defaults"] = defaults
    doc["steps"] = draw(st.lists(steps(names), min_size=1, max_size=3))
    if draw(st.booleans()):
        doc["finish"] = draw(lines([], names))
    return doc


# --------------------------------------------------------------------------- properties


def _invoke(runner: CliRunner, *args: str) -> Result:
    result = runner.invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"`voicecoach {' '.join(args)}` raised") from result.exception
    assert "Traceback" not in result.output, result.output
    return result


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.randoms(use_true_random=False))
def test_loading_raises_only_our_errors(rng: random.Random) -> None:
    """(a) Generated, mutated and broken documents: a routine, or VoicecoachError."""
    origin, data = fuzz.document(rng)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "routine.yaml"
        path.write_bytes(data)
        try:
            load_file(path)
        except VoicecoachError:
            pass
        except Exception as e:
            text = data.decode("utf-8", "replace")
            raise AssertionError(f"loading a {origin} document raised {e!r}:\n{text}") from e


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(routines())
def test_what_validate_accepts_show_accepts_at_every_extreme(routine: dict[str, Any]) -> None:
    """(b) and (c): validate's ok is show's ok, at every end of every option and for every
    variation, and the timeline is sane."""
    text = yaml.safe_dump(routine, sort_keys=False, allow_unicode=True)
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "routine.yaml"
        path.write_text(text, encoding="utf-8")
        validated = _invoke(runner, "validate", str(path))
        assert validated.exit_code in (0, 2), validated.output
        if validated.exit_code != 0:
            return  # refused: the contract promises nothing more
        runs = [*EXTREMES, *(["--variation", v] for v in routine.get("variations", {}))]
        for options in runs:
            shown = _invoke(runner, "show", str(path), "--json", *options)
            command = " ".join(["show", "--json", *options])
            assert shown.exit_code == 0, (
                f"validate accepts the routine but `{command}` fails:\n{shown.stderr}\n{text}")
            problems = fuzz.check_timeline(shown.stdout, text, options)
            assert problems == [], f"`{command}`: {problems}\n{text}"


def test_the_timeline_checks_catch_what_they_should() -> None:
    """The checks (c) relies on, on hand-made timelines."""
    def timeline(*events: tuple[str, float, float, str]) -> str:
        import json

        return json.dumps({"duration": 10.0, "sample_rate": 100, "events": [
            {"kind": "tone", "start": s, "end": e, "tone": t, "step": step}
            for t, s, e, step in [(k, a, b, "A") for k, a, b, _ in events]]})

    routine = "title: T\nsteps:\n  - name: A\n    hold: 5\n"
    good = timeline(("hold_start", 1.0, 1.2, ""), ("hold_end", 6.0, 6.2, ""))
    assert fuzz.check_timeline(good, routine) == []
    assert fuzz.check_timeline(good, routine, ["--hold", "2"]) == [
        "a hold_start window is not exact: 500 samples, expected one of [200]"]
    unsorted = timeline(("hold_start", 6.0, 6.2, ""), ("hold_end", 1.0, 1.2, ""))
    assert "events are not sorted by start" in fuzz.check_timeline(unsorted)
    overlap = timeline(("hold_start", 1.0, 2.0, ""), ("hold_end", 1.5, 1.6, ""))
    assert "two events overlap" in fuzz.check_timeline(overlap)
    outside = timeline(("hold_start", 1.0, 1.2, ""), ("hold_end", 9.9, 10.2, ""))
    assert "an event is outside 0..duration or ends before it starts" in fuzz.check_timeline(outside)
    assert fuzz.check_timeline('{"duration": NaN, "sample_rate": 100, "events": []}') == [
        "a time is not a finite number"]
    unpaired = timeline(("hold_start", 1.0, 1.2, ""))
    assert fuzz.check_timeline(unpaired) == ["a hold_start tone has no hold_end tone after it"]
