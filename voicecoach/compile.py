"""Compile a routine for one variation into a flat script of cues.

Pure and fast: no audio and no clock. Ranges are resolved by the person's level and
overrides, reps, sides, arms, repeats and sets are expanded, template words filled in.
The scheduler then gives every cue its time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import RoutineError, UsageError, did_you_mean
from .model import Amount, Announce, Line, Phase, Range, Routine, Step, Where
from .spec import LEVELS, Options
from .template import agree, fill


@dataclass(frozen=True)
class Say:
    text: str
    step: str
    label: str = ""


@dataclass(frozen=True)
class Tone:
    kind: str
    step: str
    label: str = ""


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Chapter:
    """Marks the start of a step: a chapter in exports, a target for skip in playback."""

    title: str


@dataclass(frozen=True)
class Mark:
    """A cue inside a timed window: at seconds from its start, before its end, or right
    after the previous mark (`follow`)."""

    cue: Say | Tone
    anchor: Literal["start", "end", "follow"]
    seconds: float = 0.0
    where: Where | None = None
    optional: bool = False
    """Words voicecoach adds itself ("Set 2 of 3 next."): left out where they do not fit."""


@dataclass(frozen=True)
class Timed:
    """A window of exact length: a hold, a tempo phase, a rest. Its marks never stretch it."""

    seconds: float
    marks: tuple[Mark, ...] = ()
    where: Where | None = None
    kind: Literal["hold", "phase", "rest"] = "phase"
    """A hold or rest is timed exactly; a tempo phase is a movement, which may slow down
    to fit its words when an option makes them longer."""


@dataclass(frozen=True)
class Begin:
    """A rep or a side starts here (the timeline keeps it as a span, for the status line)."""

    kind: Literal["rep", "side"]
    label: str


@dataclass(frozen=True)
class End:
    """The innermost open rep or side ends here."""


Cue = Say | Tone | Wait | Chapter | Timed | Begin | End


@dataclass(frozen=True)
class Script:
    routine_id: str
    title: str
    variation: str
    cues: tuple[Cue, ...] = field(default_factory=tuple)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def resolve(amount: Amount, level: str) -> float:
    """A range becomes one value at the person's level; whole seconds, rounded half up."""
    if isinstance(amount, Range):
        return float(int(amount.pick(level) + 0.5))
    return float(amount)


class _Compiler:
    def __init__(self, routine: Routine, variation: str, options: Options) -> None:
        self.routine = routine
        self.variation = variation
        self.options = options
        self.cues: list[Cue] = []
        self._places: dict[int, int] | None = None
        """Each announced step's place among the exercises, by identity."""

    def line(self, line: Line, step: str, words: dict[str, str], label: str = "") -> None:
        text = line.for_variation(self.variation)
        if text and not (self.options.brief and line.purpose == "background"):
            self.cues.append(Say(fill(text, words), step, label))

    def lines(self, lines: tuple[Line, ...], step: str, words: dict[str, str], label: str = "") -> None:
        for line in lines:
            self.line(line, step, words, label)

    def hold_window(self, seconds: float, during: tuple[Announce, ...], step: str,
                    words: dict[str, str], label: str, where: Where) -> None:
        marks = [Mark(Tone("hold_start", step, label), "start", 0.0, where)]
        halfway = any(a.kind == "halfway" for a in during)
        for a in during:
            if a.kind in ("left", "after") and a.seconds >= seconds:
                continue  # "ten seconds left" has no moment in an 8-second hold: it does not apply
            if a.kind == "left" and (a.seconds > seconds / 2 or (halfway and a.seconds == seconds / 2)):
                continue  # nor before the middle of a 12-second one, or on top of "halfway"
            if a.kind == "halfway":
                marks.append(Mark(Say(fill(a.text, words), step, label), "start", seconds / 2, a.where))
            elif a.kind == "after":
                marks.append(Mark(Say(fill(a.text, words), step, label), "start", a.seconds, a.where))
            elif a.kind == "left":
                marks.append(Mark(Say(fill(a.text, words), step, label), "end", a.seconds, a.where))
            else:
                for tick in range(min(int(a.seconds), int(seconds) - 1), 0, -1):
                    marks.append(Mark(Tone("countdown", step, label), "end", float(tick), a.where))
        self.cues.append(Timed(seconds, tuple(marks), where, "hold"))
        self.cues.append(Tone("hold_end", step, label))

    def phases(self, phases: tuple[Phase, ...], step: str, words: dict[str, str],
               label: str, count: str | None, milestone: str | None = None) -> None:
        """One rep's phases; the first says the rep's number and its milestone, if any."""
        for phase in phases:
            if phase.arms:
                if phase.say:
                    self.cues.append(Say(fill(phase.say, words), step, label))
                for i, arm in enumerate(phase.arms):
                    arm_words = {**words, "arm": arm}
                    arm_label = f"{label}, {arm} arm" if label else f"{arm} arm"
                    if i:
                        self.cues.append(Tone("switch", step, arm_label))
                        if phase.switch:
                            self.cues.append(Say(fill(phase.switch, arm_words), step, arm_label))
                    self.phases(phase.phases, step, arm_words, arm_label, count, milestone)
                    count = milestone = None
                continue
            marks: list[Mark] = []
            if phase.hold is not None:
                marks.append(Mark(Tone("hold_start", step, label), "start", 0.0, phase.where))
            if count:  # the rep's number first, then the phase's own words, each after the last
                marks.append(Mark(Say(count, step, label), "follow" if marks else "start", 0.0, phase.where))
                count = None
            if phase.say:
                marks.append(Mark(Say(fill(phase.say, words), step, label), "follow" if marks else "start",
                                  0.0, phase.where))
            if milestone:  # a coach's extra: said where it fits, never slowing the movement
                marks.append(Mark(Say(milestone, step, label), "follow" if marks else "start",
                                  0.0, phase.where, optional=True))
                milestone = None
            if phase.hold is not None:
                seconds = resolve(phase.hold, self.options.level)
                self.cues.append(Timed(seconds, tuple(marks), phase.where, "hold"))
                self.cues.append(Tone("hold_end", step, label))
                continue
            assert phase.seconds is not None
            self.cues.append(Timed(resolve(phase.seconds, self.options.level), tuple(marks), phase.where))

    def work(self, step: Step, words: dict[str, str], label: str) -> None:
        """The body of a step for one side: a hold or the reps."""
        if step.hold is not None:
            self.hold_window(float(words["seconds"]), step.during, step.name, words, label, step.where)
        elif step.reps is not None:
            reps = int(words["reps"])
            milestones = rep_milestones(reps) if (step.milestones is None and reps >= 10) \
                or step.milestones else {}
            for rep in range(1, reps + 1):
                rep_words = {**words, "rep": str(rep)}
                rep_label = f"{label}, rep {rep} of {reps}" if label else f"rep {rep} of {reps}"
                self.cues.append(Begin("rep", rep_label))
                self.phases(step.tempo, step.name, rep_words, rep_label,
                            str(rep) if step.count else None, milestones.get(rep))
                self.cues.append(End())

    def step(self, step: Step) -> None:
        if step.only is not None and self.variation not in step.only:
            return
        name = step.name
        self.cues.append(Chapter(name))
        if step.announce:
            self.cues.append(Say(self.exercise_title(step), name))
        level = self.options.level
        words: dict[str, str] = {}
        if step.hold is not None:
            hold = self.options.hold_s if self.options.hold_s is not None else resolve(step.hold, level)
            words["seconds"] = _number(hold)
        if step.reps is not None:
            reps = self.options.reps if self.options.reps is not None else resolve(step.reps, level)
            words["reps"] = _number(reps)
        sets = int(resolve(step.sets, level))
        repeat = int(resolve(step.repeat, level))
        words["sets"] = str(sets)
        sides = step.sides or ("",)
        for set_n in range(1, sets + 1):
            words["set"] = str(set_n)
            set_label = f"set {set_n} of {sets}" if sets > 1 else ""
            if set_n > 1:
                rest = resolve(step.rest_s, level) if step.rest_s is not None else 0.0
                if rest:
                    self.cues.append(Timed(rest, (
                        Mark(Tone("rest", name, set_label), "start", 0.0, step.where),
                        Mark(Say(f"Rest for {_number(rest)}{agree(_number(rest), ' seconds.')}", name,
                                 set_label), "follow", optional=True),
                        Mark(Say(f"Set {set_n} of {sets} next.", name, set_label), "end", 3.0,
                             optional=True),
                    ), step.where, "rest"))
                    self.cues.append(Tone("hold_end", name, set_label))
                self.cues.append(Say(f"Set {set_n} of {sets}.", name, set_label))
            for side_i, side in enumerate(sides):
                side_words = dict(words)
                label = set_label
                if side:
                    others = [s for s in sides if s != side]
                    side_words.update(side=side, other_side=others[0] if others else side)
                    label = f"{set_label}, {side} side" if set_label else f"{side} side"
                if side_i:
                    self.cues.append(Tone("switch", name, label))
                    self.cues.append(Say(fill(step.switch, side_words), name, label))
                if side:
                    self.cues.append(Begin("side", label))
                self.lines(step.say, name, side_words, label)
                for r in range(repeat):
                    if r:
                        self.lines(step.between, name, side_words, label)
                    if step.get_ready_s:
                        self.cues.append(Wait(step.get_ready_s))
                    self.work(step, side_words, label)
                if side:
                    self.cues.append(End())
        self.lines(step.after, name, words)

    def exercise_title(self, step: Step) -> str:
        """"Exercise 3 of 5: Shoulder shrugs.": which exercise, and how many remain."""
        if self._places is None:
            announced = [s for s in self.routine.steps if s.announce
                         and (s.only is None or self.variation in s.only)]
            self._places = {id(s): i for i, s in enumerate(announced, 1)}
        name = (step.announce or step.name).rstrip(".")
        if len(self._places) == 1:
            return f"The exercise: {name}."
        return f"Exercise {self._places[id(step)]} of {len(self._places)}: {name}."

    def run(self) -> Script:
        r = self.routine
        none: dict[str, str] = {}
        self.cues.append(Chapter("Introduction"))
        self.cues.append(Say(r.title.rstrip(".") + ".", "Introduction"))
        self.cues.extend(Say(text, "Introduction") for text in self.options.greeting)
        self.lines(r.intro, "Introduction", none)
        if len(r.variations) > 1:
            title = next(v.title for v in r.variations if v.name == self.variation)
            self.cues.append(Say(f"This session: {title.rstrip('.')}.", "Introduction"))
        self.lines(r.equipment, "Introduction", none)
        self.lines(r.safety_start, "Introduction", none)
        for step in r.steps:
            self.step(step)
        self.cues.append(Chapter("Finish"))
        self.cues.append(Tone("finish", "Finish"))
        self.lines(r.finish, "Finish", none)
        if r.dosage:
            self.lines(r.dosage.say, "Finish", none)
        self.lines(r.safety_end, "Finish", none)
        self.cues.extend(Say(text, "Finish") for text in self.options.farewell)
        return Script(r.id, r.title, self.variation, tuple(self.cues))


_FEW = {3: "Three", 5: "Five"}


def rep_milestones(reps: int) -> dict[int, str]:
    """What a coach says as the reps go by, by the rep it is said at the start of: halfway
    (half done), a few to go (counting this one), the last one."""
    said = {reps: "Last one!"}
    few = 5 if reps >= 20 else 3
    half = reps // 2 + 1
    if reps - few + 1 > half:
        said.setdefault(reps - few + 1, f"{_FEW[few]} to go.")
    if reps >= 4:
        said.setdefault(half, "Halfway.")
    return said


VARIATION_CUTOFF = 0.7
"""How alike a mistyped variation must be to be suggested: `kneel` is `kneeling`, but
`sitting` is not `standing` (0.67)."""


def check_variation(routine: Routine, variation: str | None) -> str:
    if variation is None:
        return routine.default_variation
    names = routine.variation_names
    by_case = {n.lower(): n for n in names}
    if variation not in names and variation.lower() in by_case:  # `Seated` is `seated`
        return by_case[variation.lower()]
    if variation not in names:
        raise UsageError(f"unknown variation '{variation}' for {routine.id}: "
                         f"{did_you_mean(variation, names, cutoff=VARIATION_CUTOFF)}valid: {', '.join(names)}")
    return variation


MAX_SESSION_S = 24 * 3600
"""The longest session voicecoach makes: a day."""
MAX_CUES = 200_000
"""About 40 cues a minute for a whole day; more is a mistake, not a routine."""


@dataclass(frozen=True)
class Size:
    """A lower bound on a session's length and its number of cues, from the routine alone."""

    seconds: float = 0.0
    cues: float = 0.0

    def __add__(self, other: Size) -> Size:
        return Size(self.seconds + other.seconds, self.cues + other.cues)

    def __mul__(self, times: float) -> Size:
        return Size(self.seconds * times, self.cues * times)

    @property
    def too_big(self) -> bool:
        return self.seconds > MAX_SESSION_S or self.cues > MAX_CUES

    def describe(self) -> str:
        if self.seconds > MAX_SESSION_S:
            return (f"at least {self.seconds / 3600:,.0f} hours long; a session may last at most "
                    f"{MAX_SESSION_S // 3600} hours")
        return f"{self.cues:,.0f} cues long; a session may have at most {MAX_CUES:,}"


def _phases_size(phases: tuple[Phase, ...], level: str) -> Size:
    size = Size()
    for phase in phases:
        if phase.arms:
            size += _phases_size(phase.phases, level) * len(phase.arms) + Size(0, 2 * len(phase.arms))
        else:
            seconds = phase.hold if phase.hold is not None else phase.seconds
            size += Size(resolve(seconds, level) if seconds is not None else 0.0, 4)
    return size


def step_size(step: Step, options: Options) -> Size:
    """How long a step lasts at least, and how many cues it makes, without expanding it."""
    level = options.level
    work = Size()
    if step.hold is not None:
        hold = options.hold_s if options.hold_s is not None else resolve(step.hold, level)
        work = Size(hold, 4 + len(step.during) + 10)
    elif step.reps is not None:
        reps = options.reps if options.reps is not None else resolve(step.reps, level)
        work = _phases_size(step.tempo, level) * reps
    repeat = resolve(step.repeat, level)
    per_side = (work + Size(step.get_ready_s, len(step.between) + 1)) * repeat + Size(0, len(step.say) + 2)
    sets = resolve(step.sets, level)
    rest = resolve(step.rest_s, level) if step.rest_s is not None else 0.0
    return per_side * (len(step.sides) or 1) * sets + Size(rest, 5) * (sets - 1) + Size(0, len(step.after))


def _check_size(routine: Routine, variation: str, options: Options) -> None:
    """Refuse a session too big to make before making any of it: `reps: 1000, sets: 1000`
    in a few bytes would otherwise expand into billions of cues."""
    steps = [s for s in routine.steps if s.only is None or variation in s.only]
    total = sum((step_size(s, options) for s in steps), Size())
    if not total.too_big:
        return
    plain = Options(options.level)
    sizes = [step_size(s, plain) for s in steps]
    plain_total = sum(sizes, Size())
    if not plain_total.too_big:  # the routine is fine as written: the options did it
        chosen = " ".join(f"--{k} {v:g}" for k, v in (("hold", options.hold_s), ("reps", options.reps))
                          if v is not None)
        raise UsageError(f"{chosen} would make this session {total.describe()}")
    worst = max(zip(sizes, steps, strict=True), key=lambda pair: pair[0].seconds)[1]
    raise RoutineError([worst.where.problem(
        f"the session would be {plain_total.describe()}; "
        "lower this step's reps, sets, repeat or hold")])


def compile_routine(routine: Routine, variation: str | None = None,
                    options: Options | None = None) -> Script:
    """Routine + variation + options -> the flat script of cues."""
    options = options or Options()
    if options.level not in LEVELS:
        raise UsageError(f"unknown level '{options.level}': valid: {', '.join(LEVELS)}")
    variation = check_variation(routine, variation)
    _check_size(routine, variation, options)
    return _Compiler(routine, variation, options).run()
