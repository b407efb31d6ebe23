"""Load a routine file: YAML text to a checked `Routine`, or every problem at once.

Safe loading only: anchors and aliases are refused before anything is built (an alias
bomb fails in the event scan, in time linear in the file), the input size and nesting
depth are capped, and structure is checked against the JSON Schema the editors use.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import Problem, RoutineError, UsageError, VoicecoachError, did_you_mean
from .compile import VARIATION_CUTOFF
from .model import (
    Amount,
    Announce,
    Dosage,
    Line,
    Phase,
    Purpose,
    Range,
    Routine,
    Step,
    Variation,
    Where,
)
from .schema import MAX_COUNT, MAX_SECONDS, RANGE_PATTERN, SCHEMA
from .template import problems as template_problems

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
IMPLICIT_VARIATION = Variation("standard", "Standard", default=True)
_RANGE = re.compile(RANGE_PATTERN)

Key = tuple[str | int, ...]
_T = TypeVar("_T")
_ONCE: Amount = 1.0
_NO_AMOUNT: Amount | None = None
_SECONDS_KEYS = {"hold", "rest", "seconds", "get_ready", "left", "after"}


def _path_text(path: Key) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Doc:
    """Plain data from YAML nodes, remembering where each value and key was written."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: dict[Key, tuple[int, int]] = {}
        self.key_marks: dict[Key, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.flow: dict[Key, set[int]] = {}
        """Where a [...] list was written, and which of its items were not in quotes."""

    def forget(self) -> None:
        """Drop every mark and problem, to build again from the start."""
        self.flow.clear()
        self.marks.clear()
        self.key_marks.clear()
        self.problems.clear()

    def where(self, path: Key, *, key: bool = False) -> Where:
        marks = self.key_marks if key and path in self.key_marks else self.marks
        probe = path
        while probe not in marks and probe:
            probe = probe[:-1]
        line, column = marks.get(probe, (1, 1))
        return Where(self.file, line, column, _path_text(path))

    def add(self, path: Key, message: str, *, key: bool = False) -> None:
        self.problems.append(self.where(path, key=key).problem(message))

    def build(self, node: yaml.Node, path: Key, loader: yaml.SafeLoader) -> Any:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.marks[path + ("?",)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    self.add(path + ("?",), f"keys must be text, got {_show(key)}")
                    continue
                self.key_marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    self.add(path + (key,), f"duplicate key '{key}'", key=True)
                out[key] = self.build(value_node, path + (key,), loader)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.flow_style:  # unquoted items of a [...] list: split at commas
                self.flow[path] = {i for i, item in enumerate(node.value)
                                   if isinstance(item, yaml.ScalarNode) and not item.style}
            return [self.build(item, path + (i,), loader) for i, item in enumerate(node.value)]
        try:
            return loader.construct_object(node)
        except (ValueError, IndexError, AttributeError, TypeError, OverflowError,
                yaml.YAMLError):  # `!!float` on nothing, `!!timestamp 99999-01-01`...
            self.add(path, f"cannot read {_show(node.value)} as {node.tag.rsplit(':', 1)[-1]}; "
                           "write the value without a !! tag")
            return None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


_SENTENCE_ENDS = (".", "!", "?", ":", ";", "…", '"', "'", ")")


def _show_long(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _scan(text: str, doc: _Doc, loader_class: type[yaml.SafeLoader]) -> bool:
    """Refuse anchors, aliases, deep nesting and multiple documents before composing."""
    depth = 0
    documents = 0
    for event in yaml.parse(text, Loader=loader_class):
        mark = event.start_mark
        where = Where(doc.file, mark.line + 1, mark.column + 1, "") if mark else Where(doc.file, 1, 1, "")
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            doc.problems.append(where.problem("anchors and aliases (& and *) are not allowed"))
            return False
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                doc.problems.append(where.problem("expected one YAML document, found several"))
                return False
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                doc.problems.append(where.problem(f"nested deeper than {MAX_DEPTH} levels"))
                return False
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return True


def _schema_problems(data: Any, doc: _Doc) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        _report(error, doc)


def _report(error: Any, doc: _Doc) -> None:
    path: Key = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    kind = error.validator
    if kind == "anyOf" and isinstance(value, dict) and "text" not in value and len(value) == 1 \
            and schema.get("x-expected") == "text, or a mapping with text and only":
        doc.add(path, "expected text, got a mapping: text with ': ' in it must be in quotes")
        return
    if kind in ("anyOf", "oneOf"):
        branches = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        deeper = [e for e in branches if e.relative_path or e.validator not in ("pattern", "type")]
        if isinstance(value, dict) and deeper:
            for sub in deeper:
                _report(sub, doc)
            return
        bounds = [e for e in branches if e.validator in ("minimum", "maximum")]
        if bounds:
            _report(bounds[0], doc)
            return
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        for key in value:
            if key in allowed:
                continue
            if not allowed:
                doc.add(path + (key,), f"unknown key '{key}'", key=True)
                continue
            hint = did_you_mean(key, allowed).rstrip()
            doc.add(path + (key,), f"unknown key '{key}'{'; ' + hint if hint else ''} "
                                   f"(allowed: {', '.join(allowed)})", key=True)
        return
    if kind == "required":
        missing = [k for k in schema.get("required", []) if isinstance(value, dict) and k not in value]
        for key in missing:
            doc.add(path, f"missing required key '{key}'")
        return
    if kind == "propertyNames":
        bad = [k for k in value if not re.match(schema["propertyNames"]["pattern"], k)]
        for key in bad:
            doc.add(path + (key,), f"name '{key}' should be lower-case letters, digits, - or _", key=True)
        return
    if kind in ("minimum", "maximum"):
        word = "at least" if kind == "minimum" else "at most"
        unit = ""
        if path and path[-1] in _SECONDS_KEYS:
            unit = " second" if error.validator_value == 1 else " seconds"
        doc.add(path, f"expected {word} {error.validator_value:g}{unit}, got {_show(value)}")
        return
    if kind == "minItems":
        doc.add(path, f"expected at least {error.validator_value} items, got {len(value)}")
        return
    if kind in ("minLength",):
        doc.add(path, "must not be empty")
        return
    if kind == "maxLength":
        doc.add(path, f"too long: at most {error.validator_value} characters")
        return
    expected = schema.get("x-expected")
    if not expected:
        expected = {"object": "a mapping", "array": "a list", "string": "text",
                    "boolean": "true or false", "integer": "a whole number",
                    "number": "a number"}.get(str(schema.get("type")), error.message)
    doc.add(path, f"expected {expected}, got {_show(value)}")


class _Builder:
    """Checks what the schema cannot (names, ranges, templates) and builds the model."""

    def __init__(self, data: dict[str, Any], doc: _Doc, *, lenient: bool = False) -> None:
        self.data = data
        self.doc = doc
        self.lenient = lenient
        self.variations: tuple[Variation, ...] = ()

    def amount(self, value: Any, path: Key, *, whole: bool = False, unit: str = "") -> Amount:
        if isinstance(value, str):
            m = _RANGE.match(value)
            if not m:  # the schema already reported it
                return 1.0
            low, high = float(m.group(1)), float(m.group(2))
            limit = MAX_COUNT if whole else MAX_SECONDS
            if low > high:
                self.doc.add(path, f"range {value!r} goes down: write the smaller number first")
            elif high > limit:
                self.doc.add(path, f"expected at most {limit}{unit}, got {_show(value)}")
            elif whole and not (low.is_integer() and high.is_integer()):
                self.doc.add(path, f"expected whole numbers, got {_show(value)}")
            elif low <= 0:
                self.doc.add(path, f"expected more than 0, got {_show(value)}")
            return Range(low, high) if low != high else low
        if isinstance(value, float) and not math.isfinite(value):
            self.doc.add(path, f"expected a finite number, got {_show(value)}")
            return 1.0
        return float(value)

    def only(self, value: Any, path: Key) -> frozenset[str] | None:
        if value is None:
            return None
        names = self.names()
        for i, name in enumerate(value):
            self.check_variation(name, path + (i,))
        return frozenset(v for v in value if v in names)

    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variations)

    def check_variation(self, name: str, path: Key) -> None:
        names = self.names()
        if name not in names:
            self.doc.add(path, f"unknown variation '{name}': {did_you_mean(name, names, cutoff=VARIATION_CUTOFF)}valid: "
                               f"{', '.join(names)}")

    def template(self, text: str, path: Key, allowed: set[str]) -> str:
        for problem in template_problems(text, allowed):
            self.doc.add(path, problem)
        return text

    def lines(self, value: Any, path: Key, allowed: set[str],
              purpose: Purpose = "instruction") -> tuple[Line, ...]:
        self.split_sentences(value, path)
        out = []
        for i, item in enumerate(value or []):
            p = path + (i,)
            where = self.doc.where(p)
            if isinstance(item, str):
                out.append(Line(self.template(item, p, allowed), where=where, purpose=purpose))
                continue
            text = item["text"]
            if isinstance(text, dict):
                for name, words in text.items():
                    self.check_variation(name, p + ("text", name))
                    self.template(words, p + ("text", name), allowed)
            else:
                self.template(text, p + ("text",), allowed)
            out.append(Line(text, self.only(item.get("only"), p + ("only",)), where,
                            item.get("purpose", purpose)))
        return tuple(out)

    def split_sentences(self, value: Any, path: Key) -> None:
        """`say: [Draw your chin back, hold, release.]` is three spoken lines, not one: a
        [...] list splits at commas. Text ending mid-sentence is that mistake."""
        plain = self.doc.flow.get(path, set())
        if not isinstance(value, list) or len(value) < 2:
            return
        if all(i not in plain or not isinstance(v, str) or v.rstrip().endswith(_SENTENCE_ENDS)
               for i, v in enumerate(value)):
            return
        parts = " / ".join(repr(v) for v in value if isinstance(v, str))
        self.doc.add(path, f"this [...] list splits its text at every comma into {len(value)} "
                           f"spoken lines ({_show_long(parts)}); to say one sentence, put it in "
                           "quotes inside the brackets, or write it as a '- ' item")

    def announces(self, value: Any, path: Key, allowed: set[str]) -> tuple[Announce, ...]:
        out = []
        for i, item in enumerate(value or []):
            p = path + (i,)
            where = self.doc.where(p)
            kinds = [k for k in ("halfway", "left", "after", "countdown") if k in item]
            if len(kinds) != 1:
                self.doc.add(p, "expected exactly one of halfway, left, after or countdown")
                continue
            kind = kinds[0]
            if kind in ("left", "after"):
                if "say" not in item:
                    self.doc.add(p, f"'{kind}' needs 'say': what to say then")
                    continue
                text = self.template(item["say"], p + ("say",), allowed)
                out.append(Announce(kind, text, float(item[kind]), where))  # type: ignore[arg-type]
            elif "say" in item:
                self.doc.add(p + ("say",), f"'{kind}' takes no 'say'")
            elif kind == "halfway":
                out.append(Announce("halfway", self.template(item["halfway"], p, allowed), 0.0, where))
            else:
                out.append(Announce("countdown", "", float(item["countdown"]), where))
        return tuple(out)

    def phases(self, value: Any, path: Key, allowed: set[str]) -> tuple[Phase, ...]:
        out = []
        for i, item in enumerate(value or []):
            p = path + (i,)
            kinds = [k for k in ("seconds", "hold", "arms") if k in item]
            if len(kinds) != 1:
                self.doc.add(p, "expected exactly one of seconds, hold or arms")
                continue
            kind = kinds[0]
            if kind == "arms":
                if "phases" not in item:
                    self.doc.add(p, "'arms' needs 'phases': what to do with each arm")
                    continue
                inner = allowed | {"arm"}
                out.append(Phase(
                    say=self.template(item.get("say", ""), p + ("say",), allowed),
                    arms=tuple(item["arms"]),
                    phases=self.phases(item["phases"], p + ("phases",), inner),
                    switch=self.template(item.get("switch", ""), p + ("switch",), inner),
                    where=self.doc.where(p),
                ))
                continue
            if "phases" in item or "switch" in item:
                self.doc.add(p, "'phases' and 'switch' go with 'arms'")
            out.append(Phase(
                say=self.template(item.get("say", ""), p + ("say",), allowed),
                seconds=self.amount(item["seconds"], p + ("seconds",)) if kind == "seconds" else None,
                hold=self.amount(item["hold"], p + ("hold",)) if kind == "hold" else None,
                where=self.doc.where(p),
            ))
        return tuple(out)

    def step(self, item: dict[str, Any], path: Key, defaults: dict[str, Any]) -> Step:
        allowed = {"set", "sets"}
        if "hold" in item:
            allowed.add("seconds")
        if "sides" in item:
            allowed |= {"side", "other_side"}
        if "reps" in item:
            allowed.add("reps")
        after_words = allowed - {"set", "side", "other_side"}  # said once, after every set and side
        if "hold" in item and "reps" in item:
            self.doc.add(path, "a step has either a hold or reps, not both")
        if "reps" in item and "tempo" not in item:
            self.doc.add(path + ("reps",), "reps need a 'tempo': the timed phases of one rep")
        if "tempo" in item and "reps" not in item:
            self.doc.add(path + ("tempo",), "'tempo' goes with 'reps'")
        if "during" in item and "hold" not in item:
            self.doc.add(path + ("during",), "'during' goes with 'hold'")
        for key in ("repeat", "between"):
            if key in item and "hold" not in item and "reps" not in item:
                self.doc.add(path + (key,), f"'{key}' goes with a hold or reps")
        if "rest" in item and "sets" not in item:
            self.doc.add(path + ("rest",), "'rest' goes with 'sets'")
        if "switch" in item and "sides" not in item:
            self.doc.add(path + ("switch",), "'switch' goes with 'sides'")
        during = item.get("during", defaults.get("during") if "hold" in item else None)
        during_path = path + ("during",) if "during" in item else ("defaults", "during")
        rep_words = allowed | {"rep"}
        g = self.safely
        return Step(
            name=g(lambda: str(item["name"]), "?"),
            only=g(lambda: self.only(item.get("only"), path + ("only",)), None),
            say=g(lambda: self.lines(item.get("say"), path + ("say",), allowed), ()),
            get_ready_s=g(lambda: float(item.get("get_ready", defaults.get("get_ready", 0))), 0.0),
            hold=g(lambda: self.amount(item["hold"], path + ("hold",)) if "hold" in item else None, _NO_AMOUNT),
            during=g(lambda: self.announces(during, during_path, allowed), ()),
            reps=g(lambda: self.amount(item["reps"], path + ("reps",), whole=True) if "reps" in item
                   else None, _NO_AMOUNT),
            count=bool(item.get("count", True)),
            milestones=g(lambda: item.get("milestones", defaults.get("milestones")), None),
            announce=g(lambda: self.announce(item, defaults), None),
            tempo=g(lambda: self.phases(item.get("tempo"), path + ("tempo",), rep_words), ()),
            sides=g(lambda: tuple(item.get("sides", ())), ()),
            switch=g(lambda: self.template(item.get("switch", "Switch sides: your {side} side."),
                                           path + ("switch",), allowed) if "sides" in item else "", ""),
            repeat=g(lambda: self.amount(item.get("repeat", 1), path + ("repeat",), whole=True), _ONCE),
            between=g(lambda: self.lines(item.get("between"), path + ("between",), allowed), ()),
            sets=g(lambda: self.amount(item.get("sets", 1), path + ("sets",), whole=True), _ONCE),
            rest_s=g(lambda: self.amount(item["rest"], path + ("rest",)) if "rest" in item else None, _NO_AMOUNT),
            after=g(lambda: self.lines(item.get("after"), path + ("after",), after_words), ()),
            where=self.doc.where(path),
        )

    @staticmethod
    def announce(item: dict[str, Any], defaults: dict[str, Any]) -> str | None:
        said = item.get("announce", defaults.get("announce", True))
        if said is True:
            return str(item["name"])
        return said if isinstance(said, str) else None

    def safely(self, make: Callable[..., _T], default: _T, *args: Any) -> _T:
        """Build one part; after the schema found problems, a part of the wrong shape was
        reported already, so the parts around it are built (and checked) all the same:
        every problem in a file comes out in one run."""
        if not self.lenient:
            return make(*args)
        try:
            return make(*args)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            return default

    def variation_list(self) -> list[Variation]:
        out = []
        for name, v in (self.data.get("variations") or {}).items():
            out.append(self.safely(lambda n, v: Variation(n, str(v["title"]), bool(v.get("default", False))),
                                   Variation(str(name), str(name)), name, v))
        return out

    def routine(self, routine_id: str) -> Routine:
        data = self.data
        g = self.safely
        variations: list[Variation] = g(self.variation_list, [])
        defaults_n = sum(v.default for v in variations)
        if variations and defaults_n != 1:
            self.doc.add(("variations",), f"exactly one variation needs 'default: true', found {defaults_n}")
        if not variations:
            variations = [IMPLICIT_VARIATION]
        elif defaults_n == 0:
            variations[0] = Variation(variations[0].name, variations[0].title, True)
        self.variations = tuple(variations)
        none: set[str] = set()
        dosage = g(lambda: self.dosage(data["dosage"]) if "dosage" in data else None, None)
        defaults: dict[str, Any] = g(lambda: dict(data.get("defaults") or {}), {})
        safety: dict[str, Any] = g(lambda: dict(data.get("safety") or {}), {})
        steps: list[Any] = g(lambda: list(data["steps"]), [])
        return Routine(
            id=routine_id,
            file=self.doc.file,
            title=g(lambda: str(data["title"]), "?"),
            description=g(lambda: str(data.get("description", "")), ""),
            source=g(lambda: str(data.get("source", "")), ""),
            steps=tuple(g(self.step, Step("?"), s, ("steps", i), defaults) for i, s in enumerate(steps)),
            variations=self.variations,
            equipment=g(lambda: self.lines(data.get("equipment"), ("equipment",), none), ()),
            dosage=dosage,
            intro=g(lambda: self.lines(data.get("intro"), ("intro",), none, "background"), ()),
            safety_start=g(lambda: self.lines(safety.get("start"), ("safety", "start"), none, "safety"), ()),
            safety_end=g(lambda: self.lines(safety.get("end"), ("safety", "end"), none, "safety"), ()),
            finish=g(lambda: self.lines(data.get("finish"), ("finish",), none), ()),
            sounds=g(lambda: self.sounds(data.get("sounds") or {}), {}),
            music=g(lambda: self.music(data.get("music")), None),
        )

    def dosage(self, d: dict[str, Any]) -> Dosage:
        return Dosage(
            say=self.lines(d["say"], ("dosage", "say"), set(), "background"),
            **{k: self.amount(d[k], ("dosage", k), whole=True)
               for k in ("reps", "sessions_per_week", "weeks") if k in d},
        )

    def sounds(self, sounds: dict[str, Any]) -> dict[str, str]:
        """Each sound file must exist and decode as a short tone: `validate` says so, not
        the first export."""
        from .errors import AudioError
        from .tones import load_wav

        out = {}
        base = Path(self.doc.file).parent if Path(self.doc.file).is_file() else None
        for kind, name in sounds.items():
            if not isinstance(name, str) or not name:
                continue
            out[kind] = name
            try:
                load_wav(Path(name) if base is None else base / name)
            except AudioError as e:
                self.doc.add(("sounds", kind), str(e))
        return out


    def music(self, name: Any) -> str | None:
        """The music must be there and be sound, checked from its headers: `validate` says
        so, not the first export."""
        from .music import find_tracks

        if not isinstance(name, str) or not name:
            return None
        base = Path(self.doc.file).parent if Path(self.doc.file).is_file() else None
        try:
            find_tracks(Path(name) if base is None else base / name, label="")
        except VoicecoachError as e:
            self.doc.add(("music",), str(e))
        return name


def _finite(data: Any, path: Key, doc: _Doc) -> None:
    """Numbers that are numbers, and text that is text (a lone surrogate from a "\ud800"
    escape can be neither said nor stored)."""
    if isinstance(data, float) and not math.isfinite(data):
        doc.add(path, f"expected a finite number, got {_show(data)}")
    elif isinstance(data, str) and any("\ud800" <= c <= "\udfff" for c in data):
        doc.add(path, "the text holds a lone surrogate (an escape like \\ud800), which is not a "
                      "character")
    elif isinstance(data, dict):
        for k, v in data.items():
            _finite(k, path + (k,), doc)
            _finite(v, path + (k,), doc)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _finite(v, path + (i,), doc)


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it: 8 times faster on our routines. A
file it refuses is parsed again by the pure-Python one, whose messages we report."""


def _parse(text: str, doc: _Doc, loader_class: type[yaml.SafeLoader]) -> Any:
    if not _scan(text, doc, loader_class):
        raise RoutineError(doc.problems)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RoutineError([Problem(doc.file, 1, 1, "", "the file is empty: expected a routine")])
        return doc.build(node, (), loader)
    finally:
        loader.dispose()


def _yaml_data(text: str, doc: _Doc) -> Any:
    file = doc.file
    try:
        try:
            return _parse(text, doc, _FAST_LOADER)
        except yaml.YAMLError:
            if _FAST_LOADER is yaml.SafeLoader:
                raise
            doc.forget()  # what the fast parser built before it gave up
            return _parse(text, doc, yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"{e.problem or e.context}"
        raise RoutineError([Problem(file, line, column, "", f"invalid YAML: {message}{_yaml_hint(message)}")]) from None
    except yaml.YAMLError as e:
        raise RoutineError([Problem(file, 1, 1, "", f"invalid YAML: {e}")]) from None
    except (ValueError, OverflowError, RecursionError) as e:  # odd scalars, e.g. huge timestamps
        raise RoutineError([Problem(file, 1, 1, "", f"invalid YAML: {e}")]) from None


_YAML_HINTS = (
    ("'{'", "text with {words} inside a [...] list must be in quotes, or written as '- ' items"),
    ("expected <block end>", "check the indentation: keys of one mapping line up, and list "
                             "items start with '- ' in the same column"),
    ("expected <block mapping start>", "check the indentation: keys of one mapping line up"),
    ("mapping values are not allowed", "text with ': ' in it must be in quotes"),
    ("could not find expected ':'", "each key needs a ':' after it; text that runs over lines "
                                    "goes after '>-' or in quotes"),
    ("'\\t'", "indent with spaces, not tabs"),
    ("'\t'", "indent with spaces, not tabs"),
)


def _yaml_hint(message: str) -> str:
    """PyYAML's words for a mistake, and what the person most likely has to do."""
    for needle, hint in _YAML_HINTS:
        if needle in message:
            return f" ({hint})"
    return ""


CHECKED_MANIFEST = "checked.txt"
"""Beside the bundled routines: the schema keys of the ones shipped, all checked when
scripts/check_routines.py wrote it (a test fails if it goes stale)."""


def schema_key(text: str) -> str:
    """Names a routine text together with the schema it is checked against."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([SCHEMA, text], sort_keys=True).encode()).hexdigest()


@functools.cache
def _bundled_checked() -> frozenset[str]:
    try:
        listing = resources.files("voicecoach.routines").joinpath(CHECKED_MANIFEST).read_text("utf-8")
    except OSError:
        return frozenset()
    return frozenset(line.split()[0] for line in listing.splitlines() if line.strip())


def _schema_marker(key: str) -> Path | None:
    """Where a text that passed the schema is remembered: jsonschema (its import above all)
    is the costliest part of loading a routine, and a routine is exported again and again
    unchanged."""
    from .cache import cache_dir

    try:
        return cache_dir() / "checked" / f"{key}.ok"
    except Exception:  # no home directory to keep a cache in: check every time
        return None


def loads(text: str, file: str = "<routine>", routine_id: str = "routine") -> Routine:
    """Parse and check a routine; raise RoutineError with every problem found."""
    doc = _Doc(file)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise RoutineError([Problem(file, 1, 1, "", f"file is larger than {MAX_BYTES // 1024} KiB")])
    data = _yaml_data(text, doc)
    if not isinstance(data, dict):
        raise RoutineError([Problem(file, 1, 1, "", f"expected a mapping of routine keys, got {_show(data)}")])
    _finite(data, (), doc)
    key = schema_key(text)
    marker = _schema_marker(key) if not doc.problems else None
    if key not in _bundled_checked() and (marker is None or not marker.exists()):
        _schema_problems(data, doc)
        if marker is not None and not doc.problems:
            from .cache import store_atomically

            store_atomically(marker, b"")
    routine = _Builder(data, doc, lenient=bool(doc.problems)).routine(routine_id)
    if doc.problems:
        raise RoutineError(sorted(doc.problems, key=lambda p: (p.line, p.column)))
    return routine


def _unreadable(name: str, reason: str) -> VoicecoachError:
    if reason == "no such file":
        return UsageError(f"no such routine file: {name}")
    if reason.startswith("it is larger than"):
        return RoutineError([Problem(name, 1, 1, "", f"the file is larger than {MAX_BYTES // 1024} "
                                                     "KiB; a routine is a short text")])
    return UsageError(f"cannot read routine file {name}: {reason}")


def load_file(path: Path) -> Routine:
    """A routine from a regular file of at most MAX_BYTES (never a device or a FIFO)."""
    from .inputs import read_regular

    raw = read_regular(path, MAX_BYTES, _unreadable)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RoutineError([Problem(str(path), 1, 1, "", f"not UTF-8 text (byte {e.start})")]) from None
    return loads(text, str(path), path.stem)


def bundled_ids() -> list[str]:
    folder = resources.files("voicecoach.routines")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _bundled_text(routine_id: str) -> str:
    return resources.files("voicecoach.routines").joinpath(f"{routine_id}.yaml").read_text("utf-8")


def load(name: str) -> Routine:
    """A bundled routine by id, or a routine file by path."""
    if name in bundled_ids():
        return loads(_bundled_text(name), f"{name}.yaml", name)
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name:
        return load_file(path)
    raise UsageError(
        f"unknown routine '{name}': {did_you_mean(name, bundled_ids(), cutoff=0.5)}bundled "
        f"routines: {', '.join(bundled_ids())}"
        " (or give a path to a .yaml file)"
    )


def iter_bundled() -> Iterator[Routine]:
    for routine_id in bundled_ids():
        yield load(routine_id)
