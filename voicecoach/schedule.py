"""Give every cue an absolute start and end, in samples: the Timeline.

Speech lengths are the real ones from the synthesizer (through the phrase cache), so
these times are the rendered audio's, to the sample. Timed windows (holds, tempo
phases, rests) have exact lengths: what is placed inside them never stretches them,
and what cannot fit is an error naming the routine line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import SAMPLE_RATE
from .compile import Chapter, Mark, Say, Script, Timed, Tone, Wait
from .errors import RoutineError
from .model import Where

PAUSE_AFTER_SPEECH_S = 0.35
"""Breath between spoken lines."""
PAUSE_AFTER_TONE_S = 0.2
FOLLOW_GAP_S = 0.1
"""Between two cues placed one after the other inside a window."""
LEAD_IN_S = 0.25
"""A breath of silence before the first word, so no player clips it."""
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


@dataclass(frozen=True)
class Timeline:
    routine_id: str
    title: str
    variation: str
    duration: int
    events: tuple[Event, ...]
    sections: tuple[Section, ...]
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return self.duration / self.sample_rate

    def to_json(self) -> dict[str, Any]:
        sr = self.sample_rate
        events = []
        for e in self.events:
            item: dict[str, Any] = {"kind": e.kind, "start": round(e.start / sr, 6),
                                    "end": round(e.end / sr, 6)}
            item["text" if e.kind == "speech" else "tone"] = e.value
            item["step"] = e.step
            events.append(item)
        return {"routine": self.routine_id, "variation": self.variation,
                "duration": round(self.duration / sr, 6), "sample_rate": sr, "events": events}

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)


def _samples(seconds: float, sample_rate: int) -> int:
    return round(seconds * sample_rate)


def schedule(script: Script, speech_length: Callable[[str], int],
             tone_length: Callable[[str], int], sample_rate: int = SAMPLE_RATE) -> Timeline:
    """Lay the script out in time. `speech_length` and `tone_length` give lengths in samples."""
    clock = _samples(LEAD_IN_S, sample_rate)
    events: list[Event] = []
    sections: list[tuple[str, int]] = []
    problems = []
    pause_speech = _samples(PAUSE_AFTER_SPEECH_S, sample_rate)
    pause_tone = _samples(PAUSE_AFTER_TONE_S, sample_rate)

    def event(cue: Say | Tone, start: int) -> Event:
        if isinstance(cue, Say):
            return Event("speech", start, start + speech_length(cue.text), cue.text, cue.step, cue.label)
        return Event("tone", start, start + tone_length(cue.kind), cue.kind, cue.step, cue.label)

    for cue in script.cues:
        if isinstance(cue, Chapter):
            sections.append((cue.title, clock))
        elif isinstance(cue, (Say, Tone)):
            e = event(cue, clock)
            events.append(e)
            clock = e.end + (pause_speech if isinstance(cue, Say) else pause_tone)
        elif isinstance(cue, Wait):
            clock += _samples(cue.seconds, sample_rate)
        elif isinstance(cue, Timed):
            length = _samples(cue.seconds, sample_rate)
            placed, errors = _place(cue, clock, length, event, sample_rate)
            events.extend(placed)
            problems.extend(errors)
            clock += length
    if problems:  # a default announcement that fails does so in every hold: say it once
        raise RoutineError(list(dict.fromkeys(problems)))
    duration = clock - (pause_tone if events and events[-1].kind == "tone" else pause_speech)
    duration = max(duration, events[-1].end if events else 0) + _samples(TAIL_S, sample_rate)
    bounds = [start for _, start in sections[1:]] + [duration]
    return Timeline(
        routine_id=script.routine_id,
        title=script.title,
        variation=script.variation,
        duration=duration,
        events=tuple(sorted(events, key=lambda e: (e.start, e.end))),
        sections=tuple(Section(t, s, b) for (t, s), b in zip(sections, bounds, strict=True)),
        sample_rate=sample_rate,
    )


def _place(window: Timed, start: int, length: int, event: Callable[[Say | Tone, int], Event],
           sample_rate: int) -> tuple[list[Event], list[Any]]:
    """Place a window's marks; any that overlap or spill out are errors, never a stretch."""
    placed: list[Event] = []
    problems = []
    previous_end = start
    keys: list[int] = []
    for mark in window.marks:  # a follow mark sorts with the mark it follows
        keys.append(keys[-1] if mark.anchor == "follow" and keys else _offset(mark, length, sample_rate))
    order = sorted(range(len(window.marks)), key=lambda i: (keys[i], i))
    for mark in (window.marks[i] for i in order):
        if mark.anchor == "follow":
            at = previous_end + (_samples(FOLLOW_GAP_S, sample_rate) if placed else 0)
        else:
            at = start + _offset(mark, length, sample_rate)
        e = event(mark.cue, at)
        where = mark.where or window.where
        what = f"{e.value!r}" if e.kind == "speech" else f"the {e.value} tone"
        seconds = length / sample_rate
        if e.end > start + length:
            problems.append(_problem(where, f"{what} ({(e.end - e.start) / sample_rate:.2f} s) does not fit in the "
                                            f"{seconds:g}-second window it is placed in; make the window longer or the words shorter"))
        elif at < previous_end:
            problems.append(_problem(where, f"{what} overlaps what comes before it in the "
                                            f"{seconds:g}-second window; there is not room for both"))
        placed.append(e)
        previous_end = max(previous_end, e.end)
    return placed, problems


def _offset(mark: Mark, length: int, sample_rate: int) -> int:
    if mark.anchor == "end":
        return length - _samples(mark.seconds, sample_rate)
    return _samples(mark.seconds, sample_rate)


def _problem(where: Where | None, message: str) -> Any:
    w = where or Where("<routine>", 1, 1, "")
    return w.problem(message)
