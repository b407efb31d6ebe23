"""Give every cue an absolute start and end, in samples: the Timeline.

Speech lengths are the real ones from the synthesizer (through the phrase cache), so
these times are the rendered audio's, to the sample. Timed windows (holds, tempo
phases, rests) have exact lengths: what is placed inside them never stretches them,
and what cannot fit is an error naming the routine line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from . import LEAD_IN_S, SAMPLE_RATE
from .compile import Begin, Chapter, End, Mark, Say, Script, Timed, Tone, Wait
from .errors import Problem, RoutineError
from .model import JSON, Where

PAUSE_AFTER_SPEECH_S = 0.35
"""Breath between spoken lines."""
PAUSE_AFTER_TONE_S = 0.2
FOLLOW_GAP_S = 0.1
"""Between two cues placed one after the other inside a window."""
TAIL_S = 1.0


@dataclass(frozen=True)
class Event:
    kind: Literal["speech", "tone"]
    start: int
    end: int
    value: str
    """The words for speech, the tone kind for a tone."""
    step: str
    label: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    start: int
    end: int


SpanKind = Literal["hold", "rest", "rep", "side"]


@dataclass(frozen=True)
class Span:
    """A stretch of the session with a structure: a hold or a rest (exact, from its tone),
    a rep, a side. Play's status line reads these instead of rebuilding them."""

    kind: SpanKind
    start: int
    end: int
    label: str = ""


@dataclass(frozen=True)
class Timeline:
    routine_id: str
    title: str
    variation: str
    duration_samples: int
    events: tuple[Event, ...]
    sections: tuple[Section, ...]
    sample_rate: int = SAMPLE_RATE
    notices: tuple[str, ...] = ()
    """What was adapted to the person's options (an announcement left out, a phase slowed)."""
    spans: tuple[Span, ...] = ()
    """Holds, rests, reps and sides, by start (the exercises are `sections`)."""

    def spans_at(self, sample: int, kind: SpanKind) -> Span | None:
        """The innermost span of a kind around a sample, if any."""
        inside = [s for s in self.spans if s.kind == kind and s.start <= sample < s.end]
        return inside[-1] if inside else None

    @property
    def duration_s(self) -> float:
        return self.duration_samples / self.sample_rate

    def to_json(self) -> dict[str, JSON]:
        sr = self.sample_rate
        events: list[JSON] = []
        for e in self.events:
            item: dict[str, JSON] = {"kind": e.kind, "start": round(e.start / sr, 6),
                                    "end": round(e.end / sr, 6)}
            item["text" if e.kind == "speech" else "tone"] = e.value
            item["step"] = e.step
            events.append(item)
        return {"routine": self.routine_id, "variation": self.variation,
                "duration": round(self.duration_samples / sr, 6), "sample_rate": sr, "events": events,
                "notices": list[JSON](self.notices),
                "spans": [{"kind": s.kind, "start": round(s.start / sr, 6), "end": round(s.end / sr, 6),
                           "label": s.label} for s in self.spans]}

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)


def _samples(seconds: float, sample_rate: int) -> int:
    return round(seconds * sample_rate)


Laid = Callable[[list[Event], int, list[tuple[str, int]], list["Span"]], None]
"""Told, cue by cue, of the events laid since it was last told and the clock: every
sound that starts before the clock is known (the list, sorted, continues the last), and
nothing laid later starts before it, so the samples before the clock are final (render.py
streams them). Also the chapters (title, start) and spans so far: lists this keeps
adding to."""


def schedule(script: Script, speech_length: Callable[[str], int],
             tone_length: Callable[[str], int], sample_rate: int = SAMPLE_RATE,
             *, adapt: bool = False, on_laid: Laid | None = None) -> Timeline:
    """Lay the script out in time. `speech_length` and `tone_length` give lengths in samples.

    What does not fit its window is an error naming the routine's line, unless `adapt`:
    then (the person's options made it not fit) an announcement in a hold or rest is left
    out and a tempo phase is lengthened to fit its words, and `Timeline.notices` says so.

    A cue's place depends only on the cues before it, so with `on_laid` the timeline is
    handed on as it grows: speech lengths can be asked for (and made) in session order
    while what is laid already plays."""
    clock = _samples(LEAD_IN_S, sample_rate)
    events: list[Event] = []
    sections: list[tuple[str, int]] = []
    problems = []
    notices: Counter[str] = Counter()  # what `adapt` changed, by what and why
    pause_speech = _samples(PAUSE_AFTER_SPEECH_S, sample_rate)
    pause_tone = _samples(PAUSE_AFTER_TONE_S, sample_rate)

    def event(cue: Say | Tone, start: int) -> Event:
        if isinstance(cue, Say):
            return Event("speech", start, start + speech_length(cue.text), cue.text, cue.step, cue.label)
        return Event("tone", start, start + tone_length(cue.kind), cue.kind, cue.step, cue.label)

    spans: list[Span] = []
    open_spans: list[tuple[Begin, int]] = []
    told = told_clock = 0  # events[:told] handed to on_laid; the rest start at the clock or later
    for cue in script.cues:
        if isinstance(cue, Chapter):
            sections.append((cue.title, clock))
        elif isinstance(cue, Begin):
            open_spans.append((cue, clock))
        elif isinstance(cue, End):
            begun, at = open_spans.pop()
            spans.append(Span(begun.kind, at, clock, begun.label))
        elif isinstance(cue, (Say, Tone)):
            e = event(cue, clock)
            events.append(e)
            clock = e.end + (pause_speech if isinstance(cue, Say) else pause_tone)
        elif isinstance(cue, Wait):
            clock += _samples(cue.seconds, sample_rate)
        elif isinstance(cue, Timed):
            length = _samples(cue.seconds, sample_rate)
            placed, errors, length = _place(cue, clock, length, event, sample_rate,
                                            notices if adapt else None)
            if cue.kind != "phase":
                label = next((e.label for e in placed), "")
                spans.append(Span(cue.kind, clock, clock + length, label))
            events.extend(placed)
            problems.extend(errors)
            clock += length
        if on_laid is not None and (len(events) > told or clock > told_clock):
            told_clock = clock
            fresh = sorted(events[told:], key=lambda e: (e.start, e.end))
            ready = [e for e in fresh if e.start < clock]
            events[told:] = ready + [e for e in fresh if e.start >= clock]
            told += len(ready)
            on_laid(ready, clock, sections, spans)
    if problems:  # a default announcement that fails does so in every hold: say it once
        raise RoutineError(list(dict.fromkeys(problems)))
    duration = clock - (pause_tone if events and events[-1].kind == "tone" else pause_speech)
    duration = max(duration, events[-1].end if events else 0) + _samples(TAIL_S, sample_rate)
    if sections:  # the first chapter is the file's start, its lead-in included
        sections[0] = (sections[0][0], 0)
    bounds = [start for _, start in sections[1:]] + [duration]
    return Timeline(
        routine_id=script.routine_id,
        title=script.title,
        variation=script.variation,
        duration_samples=duration,
        events=tuple(sorted(events, key=lambda e: (e.start, e.end))),
        sections=tuple(Section(t, s, b) for (t, s), b in zip(sections, bounds, strict=True)),
        sample_rate=sample_rate,
        notices=tuple(m if n == 1 else f"{m} ({n} times)" for m, n in notices.items()),
        spans=tuple(sorted(spans, key=lambda s: (s.start, -s.end))),
    )


def _place(window: Timed, start: int, length: int, event: Callable[[Say | Tone, int], Event],
           sample_rate: int, notices: Counter[str] | None) -> tuple[list[Event], list[Problem], int]:
    """Place a window's marks; any that overlap or spill out are errors, never a stretch.

    With `notices` (adapting to options), what does not fit is left out of a hold or rest,
    and a tempo phase grows to hold its words; the window's length is returned."""
    placed: list[Event] = []
    problems = []
    previous_end = start
    keys: list[int] = []
    for mark in window.marks:  # a follow mark sorts with the mark it follows
        keys.append(keys[-1] if mark.anchor == "follow" and keys else _offset(mark, length, sample_rate))
    order = sorted(range(len(window.marks)), key=lambda i: (keys[i], i))
    seconds = length / sample_rate
    stretch = window.kind == "phase" and notices is not None
    needed = length
    for mark in (window.marks[i] for i in order):
        if mark.anchor == "follow":
            at = previous_end + (_samples(FOLLOW_GAP_S, sample_rate) if placed else 0)
        else:
            at = max(start + _offset(mark, length, sample_rate), previous_end if stretch else start)
        e = event(mark.cue, at)
        spills = e.end > start + length
        overlaps = at < previous_end
        if (spills or overlaps) and (not stretch or mark.optional):
            what = f"{e.value!r}" if e.kind == "speech" else f"the {e.value} tone"
            opening = not placed and mark.anchor == "start" and mark.seconds == 0
            if mark.optional or (notices is not None and not opening):
                if not mark.optional and notices is not None:
                    notices[f"left out {what} in a {seconds:g}-second {window.kind}: "
                            "there is no room for it"] += 1
                continue
            if notices is None:  # the routine's own words at its own values: the author's to fix
                where = mark.where or window.where
                if spills:
                    problems.append(_problem(where, f"{what} ({(e.end - e.start) / sample_rate:.2f} s) does not "
                                                    f"fit in the {seconds:g}-second window it is placed in; make "
                                                    "the window longer or the words shorter"))
                else:
                    problems.append(_problem(where, f"{what} overlaps what comes before it in the "
                                                    f"{seconds:g}-second window; there is not room for both"))
        if spills:
            needed = max(needed, e.end - start + _samples(FOLLOW_GAP_S, sample_rate))
        placed.append(e)
        previous_end = max(previous_end, e.end)
    if stretch and needed > length and notices is not None:
        first = next((e.value for e in placed if e.kind == "speech" and not e.value.isdigit()), None)
        name = f"the {first!r} phase" if first else "a tempo phase"
        notices[f"slowed {name} beyond its {seconds:g} s to fit its words"] += 1
        length = needed
    return placed, problems, length


def _offset(mark: Mark, length: int, sample_rate: int) -> int:
    if mark.anchor == "end":
        return length - _samples(mark.seconds, sample_rate)
    return _samples(mark.seconds, sample_rate)


def _problem(where: Where | None, message: str) -> Problem:
    w = where or Where("<routine>", 1, 1, "")
    return w.problem(message)
