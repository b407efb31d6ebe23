"""The routine as typed, immutable data: what `load` returns and `compile` reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .errors import Problem

JSON: TypeAlias = "str | int | float | bool | None | list[JSON] | dict[str, JSON]"
"""A value `json.dumps` takes: what `show --json` and `history --json` print are made of."""


@dataclass(frozen=True)
class Where:
    """Where something was written, so later stages can point at it."""

    file: str
    line: int
    column: int
    path: str

    def problem(self, message: str) -> Problem:
        return Problem(self.file, self.line, self.column, self.path, message)


NOWHERE = Where("<routine>", 1, 1, "")


@dataclass(frozen=True)
class Range:
    """A span the article gives ("20 to 30 seconds"); the person's level picks within it."""

    low: float
    high: float

    def pick(self, level: str) -> float:
        if level == "low":
            return self.low
        if level == "high":
            return self.high
        return (self.low + self.high) / 2


Amount = float | Range
Purpose = Literal["background", "instruction", "safety"]


@dataclass(frozen=True)
class Line:
    """Something spoken. `text` is one string, or one per variation (others skip it)."""

    text: str | dict[str, str]
    only: frozenset[str] | None = None
    where: Where = NOWHERE
    purpose: Purpose = "instruction"
    """Background is left out of a brief session; instructions and safety never are."""

    def for_variation(self, variation: str) -> str | None:
        if self.only is not None and variation not in self.only:
            return None
        if isinstance(self.text, str):
            return self.text
        return self.text.get(variation)


@dataclass(frozen=True)
class Announce:
    """Said or sounded inside a hold, at a time fixed relative to its start or end."""

    kind: Literal["halfway", "left", "after", "countdown"]
    text: str = ""
    seconds: float = 0.0
    where: Where = NOWHERE


@dataclass(frozen=True)
class Phase:
    """One timed part of a rep. Exactly one of seconds, hold or arms is set."""

    say: str = ""
    seconds: Amount | None = None
    hold: Amount | None = None
    arms: tuple[str, ...] = ()
    phases: tuple[Phase, ...] = ()
    switch: str = ""
    where: Where = NOWHERE


@dataclass(frozen=True)
class Step:
    name: str
    only: frozenset[str] | None = None
    say: tuple[Line, ...] = ()
    get_ready_s: float = 0.0
    hold: Amount | None = None
    during: tuple[Announce, ...] = ()
    reps: Amount | None = None
    count: bool = True
    milestones: bool | None = None
    """Halfway, a few to go, the last one; None: for ten reps or more."""
    announce: str | None = None
    """The exercise's spoken name, said with its place before its instructions; None: not
    announced (a set-up step)."""
    tempo: tuple[Phase, ...] = ()
    sides: tuple[str, ...] = ()
    switch: str = ""
    repeat: Amount = 1.0
    between: tuple[Line, ...] = ()
    sets: Amount = 1.0
    rest_s: Amount | None = None
    after: tuple[Line, ...] = ()
    where: Where = NOWHERE


@dataclass(frozen=True)
class Variation:
    name: str
    title: str
    default: bool = False


@dataclass(frozen=True)
class Dosage:
    say: tuple[Line, ...]
    reps: Amount | None = None
    sessions_per_week: Amount | None = None
    weeks: Amount | None = None


@dataclass(frozen=True)
class Routine:
    id: str
    file: str
    title: str
    steps: tuple[Step, ...]
    variations: tuple[Variation, ...]
    description: str = ""
    source: str = ""
    equipment: tuple[Line, ...] = ()
    dosage: Dosage | None = None
    intro: tuple[Line, ...] = ()
    safety_start: tuple[Line, ...] = ()
    safety_end: tuple[Line, ...] = ()
    finish: tuple[Line, ...] = ()
    sounds: dict[str, str] = field(default_factory=dict)
    music: str | None = None
    """A file or folder played under the voice unless --music says otherwise (relative to
    the routine file)."""

    @property
    def default_variation(self) -> str:
        return next(v.name for v in self.variations if v.default)

    @property
    def variation_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variations)
