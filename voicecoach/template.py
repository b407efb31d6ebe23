"""Template words in spoken text: `{side}`, `{seconds}` and the rest, and nothing else.

Python's format-string parser splits the text; only plain words are allowed, never a
format spec, a conversion, an index or an attribute (`str.format` would run those), so
the loader refuses them with a located message and `fill` never meets one.
"""

from __future__ import annotations

import re
import string

WHERE_VALID = {
    "side": "a step with 'sides'",
    "other_side": "a step with 'sides'",
    "seconds": "a step with a 'hold'",
    "reps": "a step with 'reps'",
    "rep": "the 'tempo' of a step with 'reps'",
    "arm": "the 'phases' of an 'arms' phase",
    "set": "a step's say, switch, between, during or tempo",
    "sets": "a step",
}
"""Every template word, and where it has a value."""

_WORD = re.compile(r"[a-z_]+\Z")
_PLURALS = {"seconds": "second", "reps": "rep", "times": "time", "sets": "set",
            "minutes": "minute", "repetitions": "repetition", "breaths": "breath",
            "rounds": "round", "sides": "side", "hours": "hour"}
_AFTER_ONE = re.compile(r"(\s+)(" + "|".join(_PLURALS) + r")\b")


class TemplateError(ValueError):
    """A text whose braces are not plain template words."""


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def parse(text: str) -> list[tuple[str, str | None]]:
    """The text as (literal, word) pairs; word is None after the last field."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        raise TemplateError(f"unbalanced {{ or }} in {_short(text)}: write {{{{ or }}}} for a "
                            "literal brace") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is None:
            out.append((literal, None))
            continue
        if conversion is not None or spec:
            extra = f"!{conversion}" if conversion is not None else ""
            extra += f":{spec}" if spec else ""
            raise TemplateError(f"{{{name}{extra}}} in {_short(text)}: only plain words like "
                                f"{{{name}}} are allowed, no formats or conversions")
        if not _WORD.match(name):
            what = "empty {}" if not name else f"{{{name}}}"
            raise TemplateError(f"{what} in {_short(text)} is not a template word; words are "
                                "{side}, {seconds}, {reps}... (write {{ for a literal brace)")
        out.append((literal, name))
    return out


def problems(text: str, allowed: set[str] | frozenset[str]) -> list[str]:
    """What is wrong with the template words of `text` where `allowed` have values."""
    try:
        parts = parse(text)
    except TemplateError as e:
        return [str(e)]
    out = []
    for _, name in parts:
        if name is None or name in allowed:
            continue
        valid = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none here"
        hint = f" ({{{name}}} works in {WHERE_VALID[name]})" if name in WHERE_VALID else ""
        out.append(f"unknown template word {{{name}}} in {_short(text)}; valid here: {valid}{hint}")
    return out


def agree(value: str, following: str) -> str:
    """`following` with its first word singular after the number one: "1 second"."""
    if value != "1":
        return following
    return _AFTER_ONE.sub(lambda m: m.group(1) + _PLURALS[m.group(2)], following, count=1) \
        if _AFTER_ONE.match(following) else following


def fill(text: str, words: dict[str, str]) -> str:
    """The text with its words filled in; the loader has checked every word has a value."""
    out = []
    value = ""
    for literal, name in parse(text):
        out.append(agree(value, literal))
        value = words[name] if name is not None else ""
        out.append(value)
    return "".join(out)
