#!/usr/bin/env python3
"""A structure-aware fuzzer for routine files: issue 11's contract, checked by hand.

    .venv/bin/python scripts/fuzz_routines.py --count 10000 --seed 1 [--jobs 2] [--minimize]

The contract: if `validate` accepts a file, `show --json` works on it, for every option
value the help allows, and its timeline is sane (sorted, finite, inside the session, no
two events at once, every hold exactly its length in samples). Loading never raises
anything but the project's own errors.

Documents are GENERATED from scratch (routines built key by key, mostly valid, with a
dose of wrong values, odd template words, odd sounds and huge counts) or MUTATED from
the bundled routines (keys deleted, duplicated, retyped, moved; numbers set to edge
values; lists and mappings swapped; long text; broken indentation and flow lists...).
Each one is written to a file and run through the command line in-process, with
click's CliRunner, as a person would: `validate FILE`, then `show FILE --json` with
the defaults and a random choice of option extremes (--hold 1 and --reps 1000 often).
That is robust to refactors of the library under it.

Every document gets a verdict from `validate` (accepted or rejected) and, where the
contract fails, one or more failure classes:

    TRACEBACK       an exception other than the project's errors, or "Traceback" printed
                    (show also runs on refused files, for this class and the two last)
    DISAGREEMENT    validate accepts but show (or export) fails, with or without options
    BAD-TIMELINE    show --json succeeds but the timeline breaks an invariant
    UNCLEAN-REJECT  validate refuses without exit 2 and located file:line:col: messages
    HANG            a command ran past --timeout (or the worker missed its hard deadline)
    MEMORY          MemoryError under the --memory-mb address-space limit
    CRASH           the worker process died (a signal, a C library's abort)

Documents run in spawned worker processes (recycled every --max-tasks documents and
after any HANG or MEMORY), each under RLIMIT_AS and a timer, and killed past a hard
deadline. The workers share a phrase cache, so each phrase is synthesized once: a fresh
one per run, removed at the end, or --cache-dir (kept; pruned past --cache-max-mb).
Output is deterministic for a given --seed (document i is made from the seed and i
alone), whatever --jobs; only what times out can vary with the machine's load.

Failing documents are saved under --out (default /tmp/fuzz-failures), one folder per
class and signature, with a .txt beside each that says how to reproduce it (and the
sound fixtures a document may name). --minimize shrinks one document per signature
while it fails the same way (key by key, then line by line) and saves minimal.yaml.
Exit status 1 if any document failed, else 0.

tests/test_routine_properties.py imports this file for its timeline checks and uses
its document generator.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.output: what the tests allow on stderr, the fuzzer too

from tests.output import without_stage_lines  # noqa: E402

BUNDLED_DIR = REPO / "voicecoach" / "routines"
FILE_NAME = "routine.yaml"

# --------------------------------------------------------------------------- vocabulary


class Raw(str):
    """A scalar written into the YAML exactly as it is: `.inf`, `0x10`, `!!binary aGk=`."""


# Spoken words come from small lists, so a long run synthesizes a bounded set of phrases.

TITLES = ["Neck release", "Morning stretch", "Back care", "Hip opener", "Desk break",
          "Quick reset", "Shoulder routine", "Evening wind-down"]
STEP_NAMES = ["Side stretch", "Chin tucks", "Shrugs", "Cat and cow", "Plank", "Wall push",
              "Calf raise", "Hang", "Foam roller", "Bridge", "Bird dog", "Child's pose"]
LINES = ["Breathe in.", "Breathe out.", "Relax your shoulders.", "Keep your back straight.",
         "Slowly release.", "Well done.", "Halfway there.", "Ten seconds left.",
         "Almost done.", "Find a comfortable position.", "Stand tall.", "Sit on the floor.",
         "Switch sides.", "Up.", "Down.", "Hold.", "Reach out.", "Back.", "Lift.", "Rest.",
         "Again.", "Keep going.", "Stop if anything hurts.", "Move gently.", "Roll slowly.",
         "Look down.", "Lower your arms.", "Great work."]
TEMPLATES = ["Now your {w} side.", "Hold for {w} seconds.", "{w} times.", "Set {w}.",
             "Lift your {w} arm.", "{w}.", "Rep {w}.", "Again, {w}."]
WORDS = ["side", "other_side", "arm", "rep", "reps", "seconds", "set", "sets"]
ODD_FIELDS = ["{}", "{0}", "{x}", "{side.__class__}", "{side.upper}", "{side[0]}",
              "{seconds[0]}", "{seconds:d}", "{reps:d}", "{seconds:>5}", "{seconds:.2f}",
              "{side!r}", "{side!s}", "{side!a}", "{side!x}", "{seconds:{reps}}",
              "{seconds:{x}}", "{{literal}}", "{", "}", "{side", "side}", "{{side}", "{side}}",
              "{seconds:>100000}", "{seconds:>9999999999999999999}", "{seconds:,}",
              "{seconds:=^9}", "{ side }", "{Side}", "{SECONDS}", "{sïde}", "{seconds!r:>3}",
              "{rep.real}", "{0[0]}", "{:}", "{!r}", "{seconds:%}", "{{{side}}}"]
ODD_TEXT = [".", "...", "-", "!", "?", "…", " ", "  .", "\t", "🙂", "\u200b", "\u202e",
            "ẞ", "こんにちは", "مرحبا", "[[h@'loU]]", "<speak>Hi</speak>", "\x1b[31mred",
            "a\x00b", "\ud800", "1000000000000000000", "1e308", "%s %d", "$HOME", "`ls`",
            "Line one.\nLine two.", "Hold still. " * 166, "x" * 2000, "y" * 2001, "\\", "'",
            '"', "#", "- x", ": x", "&a", "*a", "!tag", "%", "@", "|", ">", "null", "~",
            "true", "20-30", "{", "}"]
SIDES = [["left", "right"], ["left", "right", "left"], ["front", "back"], ["left", "left"],
         ["one", "two", "three"], ["{side}", "{arm}"], ["Left", "Right"]]
ARMS = [["left", "right"], ["left", "right", "both"], ["top", "top"]]
VARIATIONS = ["seated", "standing", "floor", "wall", "kneeling", "easy", "hard", "a", "b-2",
              "x_y", "standard"]
ODD_VARIATIONS = ["Seated", "2nd", "with space", "", "ü", "a\n", "a.b", "-x", "_x", "a" * 300]
KEYS = ["title", "description", "source", "intro", "equipment", "variations", "safety",
        "dosage", "defaults", "sounds", "finish", "steps", "name", "only", "say", "get_ready",
        "hold", "during", "reps", "count", "tempo", "sides", "switch", "repeat", "between",
        "sets", "rest", "after", "text", "halfway", "left", "after", "countdown", "seconds",
        "arms", "phases", "default", "start", "end", "sessions_per_week", "weeks",
        "milestones", "announce", "purpose"]
PURPOSES = ["background", "instruction", "safety"]
MISSPELT = ["tilte", "titel", "hodl", "step", "Steps", "stpes", "say ", " name", "reps\t",
            "tempos", "sidez", "variation", "defualt", "halfawy", "count_down", "<<", "=",
            "?", "", "1", "null", Raw("<<"), Raw("="), Raw("1"), Raw("null"), Raw("[a, b]")]
SOUND_KINDS = ["hold_start", "hold_end", "switch", "countdown", "rest", "finish"]
SOUNDS = ["ok.wav", "long.wav", "slow-rate.wav", "one-frame.wav", "empty.wav", "text.wav",
          "silent.wav", "nan.wav", "dir.wav", "fifo.wav", "missing.wav", "sub/../ok.wav",
          "/dev/zero", "/dev/null", "/etc/passwd", "/", ".", "..", "~/ok.wav", "   ",
          "a\x00b.wav", "x" * 300 + ".wav", "ok.wav/", "routine.yaml", "odd-rate.wav"]


def _float_edges() -> list[Any]:
    return [0, 1, 0.1, 0.5, 0.9, 1.5, 2.5, 3, 1000, 1001, 3600, 3601, -1, 120, 121, 1e-9,
            10**20, float("nan"), float("inf"), float("-inf"), 3599.999999]


RANGE_EDGES = ["20-30", "30-20", "0-5", "0.4-1", "1-1", "0.1-0.2", "1-3600", "3600-3601",
               "1000-1001", "2.5-3.5", "20 to 30", "20–30", "20 - 30", "２０-３０", "20-30-40",
               "1-1000", "999-1000", "0.5-0.5", "10 to", "to 10", "20-30 "]


RAW_EDGES = [Raw(s) for s in [
    ".inf", "-.inf", ".nan", ".NaN", "nan", "inf", "1e3", "1.0e+3", "0x10", "0o17", "1_000",
    "10:30", "2001-12-14", "2001-12-14 21:59:43.10 -5", "~", "null", "yes", "no", "on",
    "off", "'20-30'", "!!float 1e400", "!!float '-0'", "!!int '99999999999999999999'",
    "!!str 5", "!!binary aGVsbG8=", "!!timestamp 99999-01-01", "!!null ''", "!!bool yes",
    "!!python/object:os.system ls", "!!set {a, b}", "!!omap [a: 1]", "!custom 5",
    "!!merge x", "\"\\0\"", "\"\\ud800\"", "\"\\x85\"", "!!float",
    "!!int 0b101", "-0", "+5", "0.", ".5", "1e-9", "12e", "0777", "1__0", "[]", "{}",
    "[1, 2]", "{a: 1}", "|\n  text", ">-", "'", "\"", "- 1",
]]


def _all_edges() -> list[Any]:
    return [*_float_edges(), *RANGE_EDGES, *RAW_EDGES, True, False, None, "", "soon", [], {},
            [1, 2], {"a": 1}]


# --------------------------------------------------------------------------- the emitter


class Pairs(list[tuple[Any, Any]]):
    """A mapping written in this order: duplicate and non-text keys included."""


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FLOW_UNSAFE = re.compile(r"[,\[\]{}]")


def _plain_ok(text: str, flow: bool) -> bool:
    if not text or not text[0].isalpha() or text != text.strip() or not text.isprintable():
        return False
    if ": " in text or " #" in text or text.endswith(":") or (flow and _FLOW_UNSAFE.search(text)):
        return False
    try:
        return bool(yaml.load(text, Loader=_LOADER) == text)
    except yaml.YAMLError:
        return False


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """YAML to data as the project reads it: libyaml, else PyYAML's own parser (which
    takes some escapes libyaml refuses, such as a lone surrogate)."""
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return yaml.load(text, Loader=yaml.SafeLoader)


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def _scalar(value: Any, rng: random.Random, flow: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return rng.choice(["null", "~", "null"])
    if isinstance(value, bool):
        return rng.choice(["true", "True"]) if value else rng.choice(["false", "False"])
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            if "." not in mantissa:
                mantissa += ".0"
            if exponent[0] not in "+-":
                exponent = "+" + exponent
            text = f"{mantissa}e{exponent}"
        return text
    text = str(value)
    if _plain_ok(text, flow) and rng.random() < 0.85:
        return text
    if "'" not in text and text.isprintable() and not _has_surrogate(text) and rng.random() < 0.3:
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=_has_surrogate(text))


def _key(key: Any, rng: random.Random, flow: bool) -> str:
    if isinstance(key, Raw):
        return str(key)
    if isinstance(key, str):
        if _PLAIN_KEY.fullmatch(key) and _plain_ok(key, flow):
            return key
        return json.dumps(key, ensure_ascii=_has_surrogate(key))
    if isinstance(key, (list, dict, Pairs)):
        return _inline(key, rng)
    return _scalar(key, rng, True)


def _items(value: dict[Any, Any] | Pairs) -> list[tuple[Any, Any]]:
    return list(value.items()) if isinstance(value, dict) else list(value)


def _inline(value: Any, rng: random.Random) -> str:
    if isinstance(value, (dict, Pairs)):
        inner = ", ".join(f"{_key(k, rng, True)}: {_inline(v, rng)}" for k, v in _items(value))
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v, rng) for v in value) + "]"
    return _scalar(value, rng, True)


def _collection(value: Any) -> bool:
    return isinstance(value, (dict, list)) and not isinstance(value, Raw)


def _block(value: Any, indent: int, rng: random.Random, flow_p: float) -> list[str]:
    pad = " " * indent
    if isinstance(value, (dict, Pairs)):
        items = _items(value)
        if not items:
            return [pad + "{}"]
        lines: list[str] = []
        for k, v in items:
            lines += _entry(pad + _key(k, rng, False) + ":", v, indent, rng, flow_p)
        return lines
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            if _collection(item) and item and rng.random() >= flow_p:
                sub = _block(item, indent + 2, rng, flow_p)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                lines += sub
            else:
                lines.append(pad + "- " + (_inline(item, rng) if _collection(item)
                                           else _scalar(item, rng, False)))
        return lines
    return [pad + _scalar(value, rng, False)]


def _entry(head: str, value: Any, indent: int, rng: random.Random, flow_p: float) -> list[str]:
    if _collection(value) and value:
        if rng.random() < flow_p:
            return [f"{head} {_inline(value, rng)}"]
        child = indent + (rng.choice([0, 2, 2, 2]) if isinstance(value, list) else 2)
        return [head, *_block(value, child, rng, flow_p)]
    if _collection(value):
        return [f"{head} {_inline(value, rng)}"]
    if (isinstance(value, str) and not isinstance(value, Raw) and len(value) > 70
            and rng.random() < 0.4 and value.isprintable() and "  " not in value
            and value == value.strip()):
        wrapped = textwrap.wrap(value, 76, break_long_words=False, break_on_hyphens=False)
        if " ".join(wrapped) == value:
            return [f"{head} >-", *(" " * (indent + 2) + w for w in wrapped)]
    if value is None and rng.random() < 0.3:
        return [head]
    return [f"{head} {_scalar(value, rng, False)}"]


def emit(data: Any, rng: random.Random, flow_p: float = 0.15) -> str:
    """YAML text for data, with random but valid styles (Raw scalars are written as is)."""
    if isinstance(data, (dict, Pairs, list)) and data and rng.random() < 0.03:
        return _inline(data, rng) + "\n"
    return "\n".join(_block(data, 0, rng, flow_p)) + "\n"


# --------------------------------------------------------------------------- generation


class Generator:
    """Routines built key by key. `chaos` is the chance of a wrong or edge value at each
    choice; `misuse` the chance of a template word used where it may not belong."""

    def __init__(self, rng: random.Random, chaos: float, misuse: float) -> None:
        self.rng = rng
        self.chaos = chaos
        self.misuse = misuse
        self.variations: list[str] = []

    def bad(self) -> bool:
        return self.rng.random() < self.chaos

    def edge(self) -> Any:
        return copy.deepcopy(self.rng.choice(_all_edges()))

    # values
    def text(self, words: list[str], spoken: bool = True) -> Any:
        rng = self.rng
        if self.bad():
            return rng.choice([*ODD_TEXT, *ODD_FIELDS, self.edge()]) if rng.random() < 0.8 \
                else rng.choice(LINES) + " " + rng.choice(ODD_FIELDS)
        if not spoken or rng.random() < 0.55:
            return rng.choice(LINES)
        if rng.random() < self.misuse:
            word = rng.choice(WORDS)
        elif words:
            word = rng.choice(words)
        else:
            return rng.choice(LINES)
        if word == "rep":  # one family of rep phrases: --reps 1000 makes a thousand of each
            return "Rep {rep}."
        return rng.choice(TEMPLATES).replace("{w}", "{" + word + "}")

    def line(self, words: list[str]) -> Any:
        rng = self.rng
        if self.variations and rng.random() < 0.25:
            names = self.pick_variations()
            item: dict[str, Any] = {}
            if rng.random() < 0.6:
                item["text"] = {n: self.text(words) for n in names}
            else:
                item["text"] = self.text(words)
            if rng.random() < 0.5:
                item["only"] = self.pick_variations()
            if rng.random() < 0.3:
                item["purpose"] = rng.choice(PURPOSES) if not self.bad() else self.edge()
            return item
        if rng.random() < 0.08:
            return {"text": self.text(words),
                    "purpose": rng.choice(PURPOSES) if not self.bad() else "trivia"}
        return self.text(words)

    def lines(self, words: list[str], most: int = 3) -> Any:
        if self.bad():
            return self.rng.choice([self.text(words), None, {"say": "x"}, [[]], self.edge()])
        return [self.line(words) for _ in range(self.rng.randint(0, most) or 1)]

    def pick_variations(self) -> list[str]:
        rng = self.rng
        names = self.variations or ["standard"]
        if self.bad():
            return rng.choice([[], [rng.choice(ODD_VARIATIONS)], ["nonesuch"], names * 2])
        return rng.sample(names, rng.randint(1, len(names)))

    def seconds(self, low: float = 1, high: int = 60) -> Any:
        rng = self.rng
        if self.bad():
            return self.edge()
        r = rng.random()
        if r < 0.55:
            return rng.randint(max(1, math.ceil(low)), high)
        if r < 0.7:
            return round(rng.uniform(low, high), 1)
        a = rng.randint(max(1, math.ceil(low)), high)
        b = a + rng.randint(0, 30)
        return rng.choice(["{}-{}", "{} to {}", "{}–{}", "{} - {}"]).format(a, b)

    def count(self, low: int = 1, high: int = 15) -> Any:
        rng = self.rng
        if self.bad():
            return rng.choice([0, 1, 1000, 1001, -1, 2.5, "3-5", "5-3", "1-1000", "2.5-3",
                               self.edge()])
        if rng.random() < 0.8:
            return rng.randint(low, high)
        a = rng.randint(low, high)
        return f"{a}-{a + rng.randint(0, 5)}"

    # structure
    def announce(self, words: list[str]) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choice(["halfway", "left", "after", "countdown", "countdown"])
        item: dict[str, Any]
        if kind == "halfway":
            item = {"halfway": self.text(words)}
        elif kind == "countdown":
            item = {"countdown": rng.randint(1, 10) if not self.bad() else self.edge()}
        else:
            at = self.edge() if self.bad() else rng.choice(
                [rng.randint(0 if kind == "after" else 1, 40), round(rng.uniform(0.5, 30), 1)])
            item = {kind: at, "say": self.text(words)}
        if self.bad():
            extra = rng.choice(["halfway", "left", "after", "countdown", "say", "bogus"])
            item[extra] = rng.choice([3, "Now.", None])
        if self.bad() and "say" in item:
            del item["say"]
        return item

    def phase(self, words: list[str], depth: int) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.15 and depth < 3:
            inner = [*words, "arm"]
            item: dict[str, Any] = {
                "arms": copy.copy(rng.choice(ARMS)),
                "phases": [self.phase(inner, depth + 1) for _ in range(rng.randint(1, 3))]}
            if rng.random() < 0.5:
                item["switch"] = self.text(inner)
            if rng.random() < 0.3:
                item["say"] = self.text(words)
        elif r < 0.35:
            item = {"hold": self.seconds(0.1, 5)}
            if rng.random() < 0.5:
                item["say"] = self.text(words)
        else:
            item = {"seconds": self.seconds(0.1, 6)}
            if rng.random() < 0.8:
                item["say"] = self.text(words)
        if self.bad():
            extra = rng.choice(["seconds", "hold", "arms", "phases", "switch", "bogus"])
            item[extra] = rng.choice([2, ["left", "right"], [{"seconds": 1}], "Go."])
        return item

    def step(self) -> dict[str, Any]:
        rng = self.rng
        step: dict[str, Any] = {"name": rng.choice(STEP_NAMES) if not self.bad() else self.edge()}
        kind = rng.choices(["hold", "reps", "plain"], [0.5, 0.38, 0.12])[0]
        words = ["set", "sets"]
        if rng.random() < 0.3:
            step["sides"] = copy.copy(rng.choice(SIDES))
            words += ["side", "other_side"]
            if rng.random() < 0.6:
                step["switch"] = self.text(words)
        if kind == "hold":
            words.append("seconds")
        elif kind == "reps":
            words += ["reps"]
        if self.variations and rng.random() < 0.2:
            step["only"] = self.pick_variations()
        if rng.random() < 0.8:
            step["say"] = self.lines(words)
        if rng.random() < 0.4:
            step["get_ready"] = rng.choice([0, 1, 3, 5, 0.5, 120]) if not self.bad() else self.edge()
        if kind == "hold":
            step["hold"] = self.seconds(1, 60)
            if rng.random() < 0.5:
                step["during"] = [self.announce(words) for _ in range(rng.randint(1, 3))]
        elif kind == "reps":
            step["reps"] = self.count(1, 30) if rng.random() > 0.05 else 1000
            step["tempo"] = [self.phase([*words, "rep"], 0) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                step["count"] = rng.random() < 0.5 if not self.bad() else self.edge()
        if kind != "plain" and rng.random() < 0.2:
            step["repeat"] = self.count(1, 4)
            if rng.random() < 0.7:
                step["between"] = self.lines(words)
        if rng.random() < 0.2:
            step["sets"] = self.count(1, 4) if rng.random() > 0.05 else rng.choice([100, 1000])
            if rng.random() < 0.8:
                step["rest"] = self.seconds(1, 60)
        if rng.random() < 0.3:
            step["after"] = self.lines(words)
        if rng.random() < 0.15:
            step["milestones"] = rng.random() < 0.5 if not self.bad() else self.edge()
        if rng.random() < 0.15:
            step["announce"] = rng.choice([True, False, self.text([])])
        if self.bad():  # a key where it does not belong
            key = rng.choice(["during", "rest", "switch", "tempo", "reps", "hold", "between",
                              "repeat", "bogus", "count"])
            step[key] = rng.choice([[{"halfway": "Half."}], 5, "Switch.", [{"seconds": 1}], "3",
                                    ["Again."], True])
        return step

    def routine(self) -> dict[str, Any]:
        rng = self.rng
        doc: dict[str, Any] = {"title": rng.choice(TITLES) if not self.bad() else self.text([])}
        if rng.random() < 0.4:
            names = rng.sample(VARIATIONS, rng.randint(1, 4))
            if self.bad():
                names.append(rng.choice(ODD_VARIATIONS))
            self.variations = [n for n in names if re.fullmatch(r"[a-z][a-z0-9_-]*", n)]
            default = rng.randrange(len(names))
            variations: dict[str, Any] = {}
            for i, name in enumerate(names):
                entry: dict[str, Any] = {"title": rng.choice(TITLES)}
                if i == default or (self.bad() and rng.random() < 0.5):
                    entry["default"] = True if not self.bad() else self.edge()
                variations[name] = entry
            doc["variations"] = variations
        for key in ("description", "source"):
            if rng.random() < 0.2:
                doc[key] = rng.choice(["A routine.", "From a magazine. " * 10, "x" * 2000])
        for key in ("intro", "equipment", "finish"):
            if rng.random() < 0.3:
                doc[key] = self.lines([])
        if rng.random() < 0.3:
            doc["safety"] = {k: self.lines([]) for k in ("start", "end") if rng.random() < 0.7}
        if rng.random() < 0.15:
            dosage: dict[str, Any] = {"say": self.lines([])}
            for k in ("reps", "sessions_per_week", "weeks"):
                if rng.random() < 0.4:
                    dosage[k] = self.count(1, 30)
            doc["dosage"] = dosage
        if rng.random() < 0.3:
            defaults: dict[str, Any] = {}
            if rng.random() < 0.6:
                defaults["get_ready"] = rng.choice([0, 2, 3, 5]) if not self.bad() else self.edge()
            if rng.random() < 0.7:
                defaults["during"] = [self.announce(["seconds", "set", "sets"])
                                      for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.2:
                defaults["milestones"] = rng.random() < 0.5
            if rng.random() < 0.2:
                defaults["announce"] = rng.random() < 0.5 if not self.bad() else "Exercise."
            doc["defaults"] = defaults
        if rng.random() < 0.06:
            doc["sounds"] = {rng.choice(SOUND_KINDS) if not self.bad() else "bogus":
                             rng.choice(SOUNDS) for _ in range(rng.randint(1, 3))}
        n = rng.choice([1, 1, 2, 2, 3, 4]) if not self.bad() else rng.choice([0, 1, 8, 30])
        doc["steps"] = [self.step() for _ in range(n)]
        if self.bad():
            doc[rng.choice([*MISSPELT, "bogus"])] = self.edge()
        if self.bad() and rng.random() < 0.3:
            del doc[rng.choice(["title", "steps"])]
        return doc


# --------------------------------------------------------------------------- mutation


def _paths(data: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in the data, parents before children (not inside Pairs)."""
    if isinstance(data, Pairs):
        return
    if isinstance(data, dict):
        for k, v in data.items():
            yield here + (k,)
            yield from _paths(v, here + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield here + (i,)
            yield from _paths(v, here + (i,))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


def _retype(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        return rng.choice([list(value.values()), [value], list(value), None, "text"])
    if isinstance(value, list):
        return rng.choice([{f"item{i}": v for i, v in enumerate(value)}, value[0] if value
                           else None, " ".join(map(str, value)), {}, None])
    if isinstance(value, str):
        return rng.choice([[value], {value[:20] or "k": value}, 3, None, True, Raw("!!binary aGk=")])
    return rng.choice([str(value), [value], {"value": value}, None, "soon"])


def mutate_data(data: Any, rng: random.Random, gen: Generator) -> Any:
    """One structural change somewhere in the data."""
    paths = list(_paths(data))
    if not paths:
        return gen.routine()
    path = rng.choice(paths)
    value = _get(data, path)
    parent = _get(data, path[:-1])
    op = rng.choice(["delete", "delete", "duplicate", "retype", "edge", "edge", "edge",
                     "swap", "long", "template", "add", "move", "rename", "variation"])
    if op == "delete":
        del parent[path[-1]]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(value))
        else:
            items = list(parent.items())
            items.insert(rng.randint(0, len(items)), (path[-1], copy.deepcopy(value)))
            data = _set(data, path[:-1], Pairs(items))
    elif op == "retype":
        data = _set(data, path, _retype(value, rng))
    elif op == "edge":
        numbers = [p for p in paths if isinstance(_get(data, p), (int, float))
                   or (isinstance(_get(data, p), str) and re.search(r"\d", _get(data, p)))]
        data = _set(data, rng.choice(numbers) if numbers else path, gen.edge())
    elif op == "swap":
        data = _set(data, path, _retype(value, rng) if _collection(value) else [value, value])
    elif op == "long":
        data = _set(data, path, "A long line. " * rng.choice([10, 153, 154, 5000, 25000]))
    elif op == "template":
        texts = [p for p in paths if isinstance(_get(data, p), str)]
        where = rng.choice(texts) if texts else path
        old = str(_get(data, where))
        cut = rng.randint(0, len(old))
        field_ = rng.choice([*ODD_FIELDS, *("{" + w + "}" for w in WORDS)])
        data = _set(data, where, old[:cut] + field_ + old[cut:])
    elif op == "add":
        target = value if isinstance(value, dict) else parent
        if isinstance(target, dict):
            key = rng.choice([*KEYS, *MISSPELT])
            target[key] = rng.choice([gen.text(WORDS), gen.seconds(), gen.count(),
                                      [gen.announce(WORDS)], [gen.phase(WORDS, 0)], gen.step(),
                                      gen.lines(WORDS), gen.edge()])
        elif isinstance(target, list):
            target.append(rng.choice([gen.step(), gen.text(WORDS), gen.edge()]))
    elif op == "move":
        dicts = [p for p in paths if isinstance(_get(data, p), dict)] + [()]
        target = _get(data, rng.choice(dicts))
        if isinstance(parent, dict) and isinstance(target, dict) and target is not parent:
            target[path[-1]] = parent.pop(path[-1])
    elif op == "rename":
        if isinstance(parent, dict):
            items = [(rng.choice([*KEYS, *MISSPELT]) if k == path[-1] else k, v)
                     for k, v in parent.items()]
            data = _set(data, path[:-1], Pairs(items))
    elif op == "variation" and isinstance(data, dict):
        variations = data.get("variations")
        if isinstance(variations, dict) and variations:
            name = rng.choice(list(variations))
            entry = variations[name]
            if isinstance(entry, dict):
                entry["default"] = rng.choice([True, False, None, "yes"])
        else:
            data["variations"] = {"one": {"title": "One", "default": True},
                                  rng.choice(VARIATIONS + ODD_VARIATIONS): {"title": "Two"}}
    return data


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:\s*(?:-|to)\s*\d+(?:\.\d+)?)?(?![\w.])")
_TEXT_EDGES = ["0", "1", "0.1", "1000", "3600", "nan", ".nan", ".inf", "-1", "20-30", "30-20",
               "0-1", "1e3", "3601", "1001", "'5'", "[5]", "{a: 5}", "~", ""]


def mutate_text(text: str, rng: random.Random) -> str:
    """One change to the text as text: numbers, indentation, lines, flow lists, bytes."""
    lines = text.split("\n")
    op = rng.choice(["number", "number", "number", "number", "indent", "indent", "delete",
                     "duplicate", "swap", "truncate", "junk", "flow", "newlines", "document",
                     "template", "template", "tab"] * 3 + ["anchor"])
    if op == "number":
        matches = list(_NUMBER.finditer(text))
        if matches:
            m = rng.choice(matches)
            return text[:m.start()] + rng.choice(_TEXT_EDGES) + text[m.end():]
    if op in ("indent", "tab") and lines:
        i = rng.randrange(len(lines))
        stripped = lines[i].lstrip(" ")
        depth = len(lines[i]) - len(stripped)
        if op == "tab":
            lines[i] = "\t" + stripped
        else:
            lines[i] = " " * max(0, depth + rng.choice([-3, -2, -1, 1, 2, 3])) + stripped
        return "\n".join(lines)
    if op == "delete" and lines:
        del lines[rng.randrange(len(lines))]
        return "\n".join(lines)
    if op == "duplicate" and lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return "\n".join(lines)
    if op == "swap" and len(lines) > 1:
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        return "\n".join(lines)
    if op == "truncate":
        return text[: rng.randint(0, len(text))]
    if op == "junk":
        at = rng.randint(0, len(text))
        junk = rng.choice([":", "-", "{", "}", "[", "]", '"', "'", "#", "&a ", "*a", "!", "%",
                           "@", "`", "|", ">", ",", "?", "\x00", "\ufeff", "\x85", "\u2028", " "])
        return text[:at] + junk + text[at:]
    if op == "flow":
        spots = [m.start() for m in re.finditer(r"\[", text)]
        if spots:
            at = rng.choice(spots) + 1
            return text[:at] + rng.choice([", ", ",,", " ,", "a,, ", "[", "]", "{x, }"]) + text[at:]
        i = rng.randrange(len(lines)) if lines else 0
        if lines and lines[i].lstrip().startswith("- "):
            lines[i] = lines[i].replace("- ", "- [", 1) + rng.choice([", ]", ",]", "", "]]"])
            return "\n".join(lines)
    if op == "newlines":
        return text.replace("\n", rng.choice(["\r\n", "\r", "\n\n", "\u2028"]))
    if op == "document":
        return rng.choice(["---\n" + text, text + "...\n", "%YAML 1.1\n---\n" + text,
                           text + "---\ntitle: Two\n", "\ufeff" + text, "%TAG ! tag:x,2000:\n---\n"
                           + text, "# comment\n" + text, text + "\n" * 1000])
    if op == "template":
        words = list(re.finditer(r"\b[a-z]{3,}\b", text))
        if words:
            m = rng.choice(words)
            return text[:m.start()] + rng.choice([*ODD_FIELDS, *("{" + w + "}" for w in WORDS)]) \
                + text[m.end():]
    if op == "anchor":
        return re.sub(r"(?m)^(\s*\w+:)", r"\1 &a", text, count=1) + "extra: *a\n"
    return text


def _junk_document(rng: random.Random) -> bytes:
    choice = rng.randrange(12)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if choice == 1:
        return b""
    if choice == 2:
        return rng.choice([b"~\n", b"[]\n", b"5\n", b"title\n", b"'x'\n", b"---\n", b"...\n"])
    if choice == 3:
        depth = rng.choice([31, 32, 33, 200])
        return b"title: " + b"[" * depth + b"]" * depth + b"\nsteps: [{name: A}]\n"
    if choice == 4:
        return b"title: T\nsteps:\n  - name: A\n    hold: 5\n" + b"#" * (256 * 1024)
    if choice == 5:
        return "title: café\nsteps: [{name: A}]\n".encode("latin-1")
    if choice == 6:
        return "title: T\nsteps: [{name: A}]\n".encode("utf-16")
    if choice == 7:
        lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
        for i in range(1, 9):
            p, n = chr(96 + i), chr(97 + i)
            lines.append(f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]")
        return ("\n".join(lines) + "\n").encode()
    if choice == 8:
        return b"title: T\nsteps:\n" + b"  - name: A\n    hold: 1\n" * 5000
    if choice == 9:
        return b"title: T\nsteps: [{name: A, hold: 1}]\n" + b"\xff\xfe"
    if choice == 10:
        return b"title: !!python/object/apply:os.system [echo hi]\nsteps: [{name: A}]\n"
    return b"? [a, b]\n: c\ntitle: T\nsteps: [{name: A}]\n"


def _bundled_texts() -> list[tuple[str, str]]:
    return [(p.name, p.read_text("utf-8")) for p in sorted(BUNDLED_DIR.glob("*.yaml"))]


def document(rng: random.Random) -> tuple[str, bytes]:
    """One document to try: (how it was made, its bytes)."""
    gen = Generator(rng, rng.choice([0.0, 0.0, 0.0, 0.02, 0.05, 0.1, 0.3]),
                    rng.choice([0.0, 0.05, 0.2]))
    r = rng.random()
    if r < 0.45:
        return "generated", emit(gen.routine(), rng).encode("utf-8", "surrogatepass")
    if r < 0.58:
        text = emit(gen.routine(), rng)
        for _ in range(rng.randint(1, 3)):
            text = mutate_text(text, rng)
        return "generated+text", text.encode("utf-8", "surrogatepass")
    name, original = rng.choice(_bundled_texts())
    if r < 0.85:
        data: Any = yaml.load(original, Loader=_LOADER)
        gen.variations = list(data.get("variations") or {})
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            data = mutate_data(data, rng, gen)
        text = emit(data, rng, flow_p=rng.choice([0.0, 0.1, 0.5]))
        if rng.random() < 0.2:
            text = mutate_text(text, rng)
        return f"mutated {name}", text.encode("utf-8", "surrogatepass")
    if r < 0.96:
        text = original
        for _ in range(rng.choice([1, 1, 2, 3])):
            text = mutate_text(text, rng)
        return f"text-mutated {name}", text.encode("utf-8", "surrogatepass")
    return "junk", _junk_document(rng)


# --------------------------------------------------------------------------- options

HOLD_LOW, HOLD_HIGH = ["--hold", "1"], ["--hold", "3600"]
REPS_LOW, REPS_HIGH = ["--reps", "1"], ["--reps", "1000"]


def option_sets(rng: random.Random) -> list[list[str]]:
    """The `show` runs for an accepted document: the defaults, then some extremes."""
    sets: list[list[str]] = [[]]
    for chance, options in [(0.6, HOLD_LOW), (0.6, REPS_HIGH), (0.25, HOLD_HIGH),
                            (0.25, REPS_LOW), (0.25, ["--level", "low"]),
                            (0.25, ["--level", "high"]), (0.07, ["--rate", "80"]),
                            (0.07, ["--rate", "400"]), (0.04, ["--volume", "0.1"]),
                            (0.15, ["--brief"]),
                            (0.1, [*HOLD_LOW, *REPS_HIGH, "--level", "low"]),
                            (0.1, [*HOLD_HIGH, *REPS_LOW, "--level", "high"])]:
        if rng.random() < chance:
            sets.append(list(options))
    return sets


# --------------------------------------------------------------------------- timeline checks

RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)\s*$")


def _candidates(amount: Any, level: str) -> set[float]:
    """What a hold, phase or rest may last at a level: the number; for a range the level's
    pick, or that pick rounded to whole seconds."""
    if isinstance(amount, bool):
        return set()
    if isinstance(amount, (int, float)):
        return {float(amount)}
    if isinstance(amount, str):
        m = RANGE.match(amount)
        if m:
            low, high = float(m.group(1)), float(m.group(2))
            pick = {"low": low, "high": high}.get(level, (low + high) / 2)
            return {pick, float(math.floor(pick + 0.5))}
    return set()


def expected_windows(data: Any, level: str, hold: float | None) -> dict[str, set[float]]:
    """Step name -> the lengths, in seconds, its hold and rest windows may have."""
    out: dict[str, set[float]] = {}
    steps = data.get("steps") if isinstance(data, dict) else None

    def phases(items: Any, into: set[float]) -> None:
        for p in items if isinstance(items, list) else []:
            if isinstance(p, dict):
                into |= _candidates(p.get("hold"), level)
                phases(p.get("phases"), into)

    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            continue
        into = out.setdefault(step["name"], set())
        if "hold" in step:
            into |= {hold} if hold is not None else _candidates(step["hold"], level)
        phases(step.get("tempo"), into)
        if hold is not None and step.get("tempo"):
            into.add(hold)  # lenient: --hold may come to apply to holds inside reps too
        into |= _candidates(step.get("rest"), level)
    return out


def _option(options: list[str], name: str) -> str | None:
    return options[options.index(name) + 1] if name in options else None


def check_timeline(output: str, document_text: str | None = None,
                   options: Iterable[str] = ()) -> list[str]:
    """What is wrong with `show --json` output: [] if nothing. With the document's text,
    hold and rest windows are also checked against their lengths in the routine."""
    problems: list[str] = []
    nonfinite: list[str] = []

    def constant(name: str) -> float:
        nonfinite.append(name)
        return math.nan

    try:
        data = json.loads(output, parse_constant=constant)
    except ValueError as error:
        return [f"not JSON: {error}"]
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return ["not a timeline: no events list"]
    sr = data.get("sample_rate")
    duration = data.get("duration")
    if not isinstance(sr, int) or sr <= 0:
        return [f"sample_rate is {sr!r}"]
    if nonfinite or not isinstance(duration, (int, float)) or not math.isfinite(duration):
        problems.append("a time is not a finite number")
        return problems
    events = []
    for event in data["events"]:
        start, end = event.get("start"), event.get("end")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (start, end)):
            return [*problems, "an event time is not a finite number"]
        events.append((round(start * sr), round(end * sr), event))
    total = round(duration * sr)
    for i, (start, end, _) in enumerate(events):
        if not 0 <= start <= end <= total:
            problems.append("an event is outside 0..duration or ends before it starts")
            break
        if i and start < events[i - 1][0]:
            problems.append("events are not sorted by start")
            break
        if i and start < events[i - 1][1]:
            problems.append("two events overlap")
            break
    opts = list(options)
    hold = _option(opts, "--hold")
    level = _option(opts, "--level") or "middle"
    windows: dict[str, set[float]] | None = None
    if document_text is not None:
        try:
            windows = expected_windows(load_yaml(document_text), level,
                                       float(hold) if hold is not None else None)
        except (yaml.YAMLError, ValueError, TypeError, RecursionError):
            windows = None
    opened: tuple[int, dict[str, Any]] | None = None
    for start, _end, event in events:
        tone = event.get("tone")
        if tone in ("hold_start", "rest"):
            if opened is not None:
                problems.append(f"a {opened[1]['tone']} tone has no hold_end tone after it")
                break
            opened = (start, event)
        elif tone == "hold_end":
            if opened is None:
                problems.append("a hold_end tone has no hold_start or rest tone before it")
                break
            length = start - opened[0]
            allowed = (windows or {}).get(str(event.get("step")))
            if opened[1].get("step") != event.get("step"):
                problems.append("a hold starts in one step and ends in another")
                break
            if allowed and all(round(s * sr) != length for s in allowed):
                problems.append(f"a {opened[1]['tone']} window is not exact: "
                                f"{length} samples, expected one of "
                                f"{sorted(round(s * sr) for s in allowed)}")
                break
            opened = None
    if opened is not None and not problems:
        problems.append(f"a {opened[1]['tone']} tone has no hold_end tone after it")
    return problems


# --------------------------------------------------------------------------- the worker


class DocTimeout(BaseException):
    """Raised by the timer inside a command that runs too long (not an Exception, so click
    does not catch it)."""


@dataclass
class Failure:
    cls: str
    signature: str
    command: list[str]
    detail: str


@dataclass
class Result:
    index: int
    verdict: str  # accepted, rejected, or error (validate itself did not finish cleanly)
    failures: list[Failure] = field(default_factory=list)
    retire: bool = False
    seconds: float = 0.0


@dataclass
class Job:
    index: int
    data: bytes
    name: str = FILE_NAME
    options: list[list[str]] = field(default_factory=lambda: [[]])
    export: bool = False
    check_rejected: bool = True


@dataclass(frozen=True)
class Config:
    timeout: float
    memory_mb: int
    cache_dir: str
    max_tasks: int
    engine: str = "espeak"


def make_fixtures(folder: Path) -> None:
    """The sound files generated routines may name, beside the routine."""
    folder.mkdir(parents=True, exist_ok=True)

    def wav(name: str, rate: int, frames: list[float], bits: int = 16) -> None:
        if bits == 32:
            data = b"".join(struct.pack("<f", x) for x in frames)
            fmt = 3
        else:
            data = b"".join(struct.pack("<h", int(max(-1, min(1, x)) * 32767)) for x in frames)
            fmt = 1
        width = bits // 8
        header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
                  + struct.pack("<IHHIIHH", 16, fmt, 1, rate, min(rate * width, 2**32 - 1),
                                width, bits)
                  + b"data" + struct.pack("<I", len(data)))
        (folder / name).write_bytes(header + data)

    beep = [0.5 * math.sin(2 * math.pi * 880 * i / 8000) for i in range(1600)]
    wav("ok.wav", 8000, beep)
    wav("long.wav", 8000, beep * 100)  # 20 s: longer than many holds
    wav("slow-rate.wav", 1, [0.5, -0.5])
    wav("odd-rate.wav", 2_147_483_647, beep[:200])
    wav("one-frame.wav", 22050, [0.5])
    wav("silent.wav", 22050, [])
    wav("nan.wav", 22050, [float("nan")] * 10, bits=32)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not a sound\n")
    (folder / "dir.wav").mkdir(exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    fifo = folder / "fifo.wav"
    if not fifo.exists():
        with contextlib.suppress(OSError, AttributeError):
            os.mkfifo(fifo)


_LOCATED = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")
_MORE = re.compile(r"^\.\.\. and [\d,]+ more problems?\b")


def normalize(message: str, file: str | None = None) -> str:
    """A message as a signature: no file, numbers or quoted words."""
    if file:
        message = message.replace(file, "FILE")
    line = next((ln for ln in message.splitlines() if ln.strip()), "(no message)")
    m = _LOCATED.match(line)
    if m:
        line = m.group("msg")
    line = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'S'", line)
    line = re.sub(r"\d+(?:\.\d+)?", "N", line)
    return line[:160]


def _frames_signature(exc: BaseException) -> tuple[str, str]:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "voicecoach" in f.filename and "fuzz_routines" not in f.filename]
    where = "?"
    if ours or frames:
        last = (ours or frames)[-1]
        path = last.filename
        cut = path.rfind("voicecoach/")
        where = f"{path[cut:] if cut >= 0 else Path(path).name}:{last.lineno} in {last.name}"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__} at {where}", text


class Runner:
    """Runs commands for one worker: the CLI in this process, under a timer."""

    def __init__(self, config: Config, folder: Path) -> None:
        from click.testing import CliRunner

        from voicecoach.cli import cli

        self.cli = cli
        self.runner = CliRunner()
        self.config = config
        self.folder = folder
        self.armed = False
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise DocTimeout()

    def invoke(self, args: list[str]) -> tuple[int | None, str, str, BaseException | None]:
        """(exit code, stdout, stderr, exception other than SystemExit)."""
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.config.timeout)
        try:
            result = self.runner.invoke(self.cli, args, catch_exceptions=True)
            self.armed = False
        except DocTimeout as e:
            return None, "", "", e
        except MemoryError as e:
            return None, "", "", e
        finally:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        exc = result.exception
        if isinstance(exc, SystemExit):
            exc = None
        try:
            out, err = result.stdout, result.stderr
        except ValueError:
            out, err = result.output, ""
        return result.exit_code, out, err, exc

    def failure_from(self, exc: BaseException, command: list[str], result: Result) -> Failure:
        signature, text = _frames_signature(exc)
        if isinstance(exc, DocTimeout):
            result.retire = True
            where = re.sub(r":\d+ in ", " in ", signature.split(" at ")[-1])
            return Failure("HANG", f"over {self.config.timeout:g} s, in {where}", command, text)
        if isinstance(exc, MemoryError):
            result.retire = True
            return Failure("MEMORY", f"MemoryError at {signature.split(' at ')[-1]}", command, text)
        return Failure("TRACEBACK", signature, command, f"{exc!r}\n{text}")

    def run(self, job: Job) -> Result:
        started = time.perf_counter()
        result = Result(job.index, "error")
        path = self.folder / job.name
        path.write_bytes(job.data)
        text = job.data.decode("utf-8", "replace")
        try:
            self._run(job, path, text, result)
        except (MemoryError, DocTimeout) as e:
            result.failures.append(self.failure_from(e, ["(harness)"], result))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        result.seconds = time.perf_counter() - started
        return result

    def _run(self, job: Job, path: Path, text: str, result: Result) -> None:
        name = str(path)
        command = ["validate", name]
        code, out, err, exc = self.invoke(command)
        if exc is not None:
            result.failures.append(self.failure_from(exc, command, result))
            return
        if "Traceback" in out + err:
            result.failures.append(Failure("TRACEBACK", "validate printed a traceback", command, err))
            return
        if code == 0 and out == f"{name}: ok\n":
            result.verdict = "accepted"
        else:
            result.verdict = "rejected"
            problem = _unclean(code, err, name, text)
            if problem:
                result.failures.append(Failure("UNCLEAN-REJECT", problem, command, err or out))
            if job.check_rejected:
                self._show_rejected(path, result)
            return
        data = None
        with contextlib.suppress(Exception):
            data = load_yaml(text)
        variations = list(data.get("variations") or {}) if isinstance(data, dict) \
            and isinstance(data.get("variations"), dict) else []
        runs = list(job.options)
        if len(variations) > 1:
            runs.append(["--variation", variations[job.index % len(variations)]])
        default_duration: float | None = None
        for options in runs:
            command = ["show", name, "--json", *options]
            code, out, err, exc = self.invoke(command)
            if exc is not None:
                result.failures.append(self.failure_from(exc, command, result))
                if result.retire:
                    return
                continue
            if "Traceback" in out + err:
                result.failures.append(Failure("TRACEBACK", "show printed a traceback", command, err))
                continue
            if code != 0:
                result.failures.append(Failure(
                    "DISAGREEMENT", f"show exit {code}: {normalize(err or out, name)}", command, err or out))
                continue
            for problem in check_timeline(out, text, options):
                result.failures.append(Failure("BAD-TIMELINE", normalize(problem), command, problem))
            if not options:
                with contextlib.suppress(Exception):
                    default_duration = float(json.loads(out)["duration"])
        if job.export and default_duration is not None and default_duration < 900:
            target = self.folder / "out.wav"
            command = ["export", name, "-o", str(target)]
            code, out, err, exc = self.invoke(command)
            with contextlib.suppress(OSError):
                target.unlink()
            if exc is not None:
                result.failures.append(self.failure_from(exc, command, result))
            elif code != 0:
                result.failures.append(Failure(
                    "DISAGREEMENT", f"export exit {code}: {normalize(err or out, name)}", command, err))

    def _show_rejected(self, path: Path, result: Result) -> None:
        """show on a refused file: a refusal or even a timeline is fine (validate may be the
        stricter, checking every level), a traceback or a hang is not."""
        command = ["show", str(path), "--json"]
        code, out, err, exc = self.invoke(command)
        if exc is not None:
            result.failures.append(self.failure_from(exc, command, result))
        elif "Traceback" in out + err:
            result.failures.append(Failure("TRACEBACK", "show printed a traceback", command, err))


def _unclean(code: int | None, err: str, name: str, text: str) -> str | None:
    """Why a refusal is not a clean one (exit 2, every line located in the file), or None."""
    if code != 2:
        return f"exit {code}: {normalize(err, name)}"
    # a line saying a long stage is at work (cli_common.stage_line) comes with the load
    lines = without_stage_lines(err).splitlines()
    if not lines:
        return "exit 2 with no message"
    count = max(1, len(text.splitlines()) + 1)
    widest = max((len(ln) for ln in text.splitlines()), default=0) + 2
    if len(lines) > 1 and _MORE.match(lines[-1]):
        lines = lines[:-1]  # a count of the problems left unprinted
    for line in lines:
        m = _LOCATED.match(line)
        if m is None or m.group("file") != name:
            return f"not located: {normalize(line, name)}"
        if not 1 <= int(m.group("line")) <= count or not 1 <= int(m.group("col")) <= widest:
            return f"location outside the file: {normalize(line, name)}"
    return None


def _limit_resources(memory_mb: int) -> None:
    import resource

    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):
        size = 512 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def _worker(conn: Any, config: Config, folder: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["VOICECOACH_CACHE_DIR"] = config.cache_dir
    os.environ["VOICECOACH_ENGINE"] = config.engine  # as the test suite: fast, and measured
    try:
        make_fixtures(folder)
        runner = Runner(config, folder)
        _limit_resources(config.memory_mb)
        done = 0
        while done < config.max_tasks:
            job = conn.recv()
            if job is None:
                break
            result = runner.run(job)
            conn.send(result)
            done += 1
            if result.retire:
                break
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the pool


class Pool:
    """Workers that can each be killed: a stuck document costs one worker, not the run."""

    def __init__(self, jobs: int, config: Config) -> None:
        self.ctx = mp.get_context("spawn")
        self.config = config
        self.size = jobs
        self.workers: list[dict[str, Any]] = []

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            self._stop(w)
        self.workers = []

    def _start(self) -> dict[str, Any]:
        parent, child = self.ctx.Pipe()
        folder = Path(tempfile.mkdtemp(prefix="fuzz-routines-"))  # removed here if it is killed
        proc = self.ctx.Process(target=_worker, args=(child, self.config, folder), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "job": None, "deadline": 0.0, "tasks": 0,
                "folder": folder}

    def run(self, jobs: Iterable[Job], hard_deadline: Callable[[Job], float]) -> Iterator[Result]:
        """Results as they come (any order); consume them all before running more."""
        if not self.workers:
            self.workers = [self._start() for _ in range(self.size)]
        todo = iter(jobs)
        exhausted = False
        while True:
            for w in self.workers:
                if w["job"] is None and not exhausted:
                    job = next(todo, None)
                    if job is None:
                        exhausted = True
                        break
                    try:
                        w["conn"].send(job)
                    except OSError:  # it left after its last task
                        self._replace(w)
                        w["conn"].send(job)
                    w["job"] = job
                    w["deadline"] = time.monotonic() + hard_deadline(job)
            busy = [w for w in self.workers if w["job"] is not None]
            if not busy:
                return
            ready = mp_connection.wait([w["conn"] for w in busy], timeout=1.0)
            for w in busy:
                job = w["job"]
                if w["conn"] in ready:
                    try:
                        result: Result = w["conn"].recv()
                    except (EOFError, OSError):
                        w["proc"].join(5)
                        code = w["proc"].exitcode
                        how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                        self._replace(w)
                        yield Result(job.index, "error", [Failure(
                            "CRASH", f"worker died ({how})", ["(worker)"], "")])
                        continue
                    w["job"] = None
                    w["tasks"] += 1
                    if result.retire or w["tasks"] >= self.config.max_tasks:
                        self._replace(w)
                    yield result
                elif time.monotonic() > w["deadline"]:
                    self._replace(w)
                    yield Result(job.index, "error", [Failure(
                        "HANG", "no answer by the hard deadline (killed)", ["(worker)"], "")])

    def _replace(self, w: dict[str, Any]) -> None:
        self._stop(w)
        w.update(self._start())

    @staticmethod
    def _stop(w: dict[str, Any]) -> None:
        proc = w["proc"]
        if proc.is_alive():
            if w["job"] is None:
                with contextlib.suppress(OSError):
                    w["conn"].send(None)
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        w["conn"].close()
        w["job"] = None
        shutil.rmtree(w["folder"], ignore_errors=True)


# --------------------------------------------------------------------------- reporting


@dataclass
class Signature:
    cls: str
    text: str
    count: int = 0
    examples: list[tuple[int, Failure]] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "x"


def _save(out: Path, sig: Signature, number: int, docs: dict[int, bytes],
          origins: dict[int, str], keep: int) -> Path:
    folder = out / sig.cls / f"{number:02d}-{_slug(sig.text)}"
    folder.mkdir(parents=True, exist_ok=True)
    if any(b"sounds" in docs[index] for index, _ in sig.examples[:keep]):
        make_fixtures(folder)  # the sound files a document may name, beside it
    for index, failure in sig.examples[:keep]:
        origin, data = origins[index], docs[index]
        (folder / f"doc-{index:06d}.yaml").write_bytes(data)
        args = ["voicecoach", *(f"doc-{index:06d}.yaml" if a.endswith(FILE_NAME) else a
                                for a in failure.command)]
        (folder / f"doc-{index:06d}.txt").write_text(
            f"class: {sig.cls}\nsignature: {sig.text}\nmade: {origin}\n"
            f"reproduce (in this folder): validate, then {' '.join(args)}\n\n{failure.detail}\n",
            encoding="utf-8", errors="replace")
    return folder


def _reproduces(result: Result, cls: str, text: str) -> bool:
    return any(f.cls == cls and f.signature == text for f in result.failures)


def _dump(data: Any) -> bytes | None:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).encode(
            "utf-8", "surrogatepass")
    except (yaml.YAMLError, TypeError, ValueError, RecursionError):
        return None


def _shorter_data(data: Any) -> Iterator[Any]:
    """Smaller versions of the data: each key or item dropped (bigger ones first), each
    long text cut to two words."""
    paths = list(_paths(data))
    for path in paths:
        smaller = copy.deepcopy(data)
        parent = _get(smaller, path[:-1])
        del parent[path[-1]]
        yield smaller
    for path in paths:
        value = _get(data, path)
        if isinstance(value, str) and len(value) > 12:
            yield _set(copy.deepcopy(data), path, value[:12].rsplit(" ", 1)[0] or value[:12])


def minimize(pool: Pool, sig: Signature, data: bytes, failure: Failure, budget: int,
             deadline: Callable[[Job], float]) -> bytes:
    """Shrink a failing document while it fails the same way: key by key on its data
    (written out plainly) where that still fails, then line by line. Candidates run in
    parallel batches and the first that still fails wins, so the outcome is deterministic."""
    kind = failure.command[0]
    options = failure.command[3:] if kind == "show" else []
    spent = 0

    def first(candidates: list[bytes]) -> int | None:
        """The index of the first candidate that still fails the same way."""
        nonlocal spent
        step = pool.size * 2
        for at in range(0, len(candidates), step):
            if spent >= budget:
                return None
            batch = candidates[at: at + step]
            spent += len(batch)
            jobs = [Job(i, c, options=[options], export=kind == "export")
                    for i, c in enumerate(batch)]
            for r in sorted(pool.run(jobs, deadline), key=lambda r: r.index):
                if _reproduces(r, sig.cls, sig.text):
                    return at + r.index
        return None

    current = data
    with contextlib.suppress(Exception):
        tree = load_yaml(data.decode("utf-8"))
        plain = _dump(tree)
        if isinstance(tree, (dict, list)) and plain is not None and first([plain]) is not None:
            current = plain
            resume = 0  # what failed to shrink before this point is not tried again at once
            while spent < budget:
                dumped: dict[bytes, Any] = {}
                for smaller in _shorter_data(tree):
                    text = _dump(smaller)
                    if text is not None and text not in dumped:
                        dumped[text] = smaller
                candidates = list(dumped)
                found = first(candidates[resume:])
                if found is None:
                    if resume == 0:
                        break
                    resume = 0
                    continue
                current = candidates[resume + found]
                tree = dumped[current]
                resume += found
    lines = current.split(b"\n")
    n = 2
    while len(lines) > 1 and spent < budget:
        size = math.ceil(len(lines) / n)
        cuts = [b"\n".join(lines[:i] + lines[i + size:]) for i in range(0, len(lines), size)]
        found = first(cuts)
        if found is not None:
            lines = cuts[found].split(b"\n")
            n = max(2, n - 1)
            continue
        if n >= len(lines):
            break
        n = min(len(lines), n * 2)
    return b"\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="documents to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fuzz-failures"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space per worker")
    parser.add_argument("--cache-dir", type=Path,
                        help="phrase cache shared by the workers, kept after the run (default: "
                             "a fresh one, removed at the end)")
    parser.add_argument("--cache-max-mb", type=int, default=3000,
                        help="past this, the oldest phrases are deleted (each spoken second is "
                             "88 KB; they are made again if needed)")
    parser.add_argument("--max-tasks", type=int, default=300, help="documents per worker")
    parser.add_argument("--engine", choices=["espeak", "piper"], default="espeak",
                        help="text-to-speech engine (VOICECOACH_ENGINE); piper is far slower")
    parser.add_argument("--export-rate", type=float, default=0.02,
                        help="share of accepted documents also exported to WAV")
    parser.add_argument("--keep", type=int, default=10, help="documents saved per signature")
    parser.add_argument("--minimize", action="store_true",
                        help="shrink one document per signature (not HANG, MEMORY, CRASH)")
    parser.add_argument("--minimize-budget", type=int, default=400, help="runs per signature")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="voicecoach-fuzz-cache-"))
    try:
        return _run(args, cache)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)


def _prune(cache: Path, max_bytes: int) -> None:
    """Keep the phrase cache under max_bytes: delete the oldest phrases (to 60% of it)."""
    files: list[tuple[float, int, str]] = []
    for folder, _, names in os.walk(cache / "phrases"):
        for name in names:
            if name.startswith(".part-"):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    if total <= max_bytes:
        return
    for _, size, path in sorted(files):
        if total <= max_bytes * 0.6:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size


def _run(args: argparse.Namespace, cache: Path) -> int:
    config = Config(args.timeout, args.memory_mb, str(cache), args.max_tasks, args.engine)
    docs: dict[int, bytes] = {}
    origins: dict[int, str] = {}

    def jobs() -> Iterator[Job]:
        for index in range(args.count):
            rng = random.Random(f"{args.seed}/{index}")
            origins[index], docs[index] = document(rng)
            yield Job(index, docs[index], options=option_sets(rng),
                      export=rng.random() < args.export_rate)

    def deadline(job: Job) -> float:
        return float(args.timeout) * (len(job.options) + 4) + 30

    for cls in CLASSES:
        shutil.rmtree(args.out / cls, ignore_errors=True)
    started = time.monotonic()
    results: list[Result] = []
    with Pool(args.jobs, config) as pool:
        for done, result in enumerate(pool.run(jobs(), deadline), 1):
            results.append(result)
            if not result.failures:
                docs.pop(result.index, None)  # only failing documents are kept
            if done % 50 == 0:
                _prune(cache, args.cache_max_mb * 1024 * 1024)
            if not args.quiet and done % 100 == 0:
                failing = sum(1 for r in results if r.failures)
                print(f"  {done}/{args.count} documents, {failing} failing, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        elapsed = time.monotonic() - started
        return _report(args, pool, deadline, results, docs, origins, elapsed)


CLASSES = ["TRACEBACK", "DISAGREEMENT", "BAD-TIMELINE", "UNCLEAN-REJECT", "HANG", "MEMORY",
           "CRASH"]


def _report(args: argparse.Namespace, pool: Pool, deadline: Callable[[Job], float],
            results: list[Result], docs: dict[int, bytes], origins: dict[int, str],
            elapsed: float) -> int:
    verdicts: Counter[str] = Counter()
    made: Counter[str] = Counter()
    failing_docs: dict[str, set[int]] = {}
    signatures: dict[tuple[str, str], Signature] = {}
    slowest: list[tuple[float, int]] = []
    for result in sorted(results, key=lambda r: r.index):
        verdicts[result.verdict] += 1
        made[origins[result.index].split(" ")[0]] += 1
        slowest.append((result.seconds, result.index))
        seen: set[tuple[str, str]] = set()
        for f in result.failures:
            key = (f.cls, f.signature)
            failing_docs.setdefault(f.cls, set()).add(result.index)
            sig = signatures.setdefault(key, Signature(f.cls, f.signature))
            if key not in seen:
                sig.count += 1
                sig.examples.append((result.index, f))
                seen.add(key)
    report: dict[str, Any] = {"seed": args.seed, "documents": args.count, **verdicts,
                              "made": dict(made), "seconds": round(elapsed, 1), "classes": {}}
    print(f"\n{args.count} documents (seed {args.seed}) in {elapsed:.0f} s: "
          f"{verdicts['accepted']} accepted, {verdicts['rejected']} rejected, "
          f"{verdicts['error']} where validate itself did not finish cleanly")
    print("  made: " + ", ".join(f"{k} {v}" for k, v in sorted(made.items())))
    any_failure = False
    for cls in CLASSES:
        sigs = sorted((s for s in signatures.values() if s.cls == cls),
                      key=lambda s: (-s.count, s.text))
        n_docs = len(failing_docs.get(cls, ()))
        print(f"{cls}: {n_docs} documents, {len(sigs)} signatures")
        entries = []
        for number, sig in enumerate(sigs, 1):
            any_failure = True
            folder = _save(args.out, sig, number, docs, origins, args.keep)
            example = sig.examples[0]
            entry: dict[str, Any] = {"signature": sig.text, "documents": sig.count,
                                     "folder": str(folder), "example": f"doc-{example[0]:06d}.yaml",
                                     "command": example[1].command}
            if args.minimize and cls not in ("HANG", "MEMORY", "CRASH"):
                index, failure = min(sig.examples, key=lambda e: (len(docs[e[0]]), e[0]))
                small = minimize(pool, sig, docs[index], failure, args.minimize_budget, deadline)
                (folder / "minimal.yaml").write_bytes(small)
                command = " ".join("minimal.yaml" if a.endswith(FILE_NAME) else a
                                   for a in failure.command)
                if failure.command[0] != "validate":
                    command = f"voicecoach validate minimal.yaml; voicecoach {command}"
                else:
                    command = f"voicecoach {command}"
                (folder / "minimal.txt").write_text(f"reproduce (in this folder): {command}\n",
                                                    encoding="utf-8")
                entry["minimal"] = small.decode("utf-8", "replace")
                entry["minimal_command"] = ["minimal.yaml" if a.endswith(FILE_NAME) else a
                                            for a in failure.command]
            entries.append(entry)
            if number <= 5:
                command = " ".join("FILE" if a.endswith(FILE_NAME) else a for a in example[1].command)
                print(f"  [{sig.count}] {sig.text}")
                print(f"       e.g. {folder}/doc-{example[0]:06d}.yaml: {command}")
        if len(sigs) > 5:
            print(f"  ... and {len(sigs) - 5} more in {args.out / cls}")
        report["classes"][cls] = {"documents": n_docs, "signatures": entries}
    slowest.sort(reverse=True)
    report["slowest"] = [{"document": i, "seconds": round(s, 2)} for s, i in slowest[:5]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"failing documents saved under {args.out} (summary.json lists every signature)")
    return 1 if any_failure else 0


if __name__ == "__main__":
    sys.exit(main())
