"""Play a session live, hands-free: the same rendered samples as an export.

Timing comes from the stream itself (samples handed to the device), never from
sleeping, so nothing drifts. On a terminal a few keys steer it; without one it plays
straight through.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import queue
import select
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from . import LEAD_IN_S, SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np

    from .backends import Player
    from .pipeline import Session
    from .schedule import Timeline

KEYS_HELP = "space pause/resume · n next step · b restart step · q quit"
CTRL_C = "\x03"
"""Ctrl-C read as a key: where the terminal does not make it SIGINT (its ISIG is off, or
voicecoach is not the terminal's foreground process), it still stops at once."""


class LeadIn:
    """The session's opening silence (LEAD_IN_S), played while the session is prepared.

    Every session starts with LEAD_IN_S of silence (schedule lays its first cue there)
    unless music plays under it. `play` hands this to the device the moment it opens, before the
    routine is even loaded: those are the session's own first samples, so play still
    equals export to the sample, and the first word comes LEAD_IN_S after the device
    opened instead of after everything else too. Then `continue_with` the session's
    chunks from `samples` on; if preparing takes longer, the device plays silence
    meanwhile without counting it (an underrun). `cancel` ends it (the session starts
    from its first sample instead, or never)."""

    def __init__(self, seconds: float = LEAD_IN_S, sample_rate: int = SAMPLE_RATE) -> None:
        self.samples = round(seconds * sample_rate)
        self._rest: queue.SimpleQueue[Iterator[np.ndarray]] = queue.SimpleQueue()

    def __iter__(self) -> Iterator[np.ndarray]:
        import numpy as np

        yield np.zeros(self.samples, np.float32)
        yield from self._rest.get()

    def continue_with(self, chunks: Iterator[np.ndarray]) -> None:
        self._rest.put(chunks)

    def cancel(self) -> None:
        self._rest.put(iter(()))


class Making:
    """The phrases a cold session is still making while it plays, counted for the status
    line: pipeline.open_session's `progress` (a bar would fight the status line)."""

    def __init__(self) -> None:
        self.total = 0
        self.made = 0

    @contextlib.contextmanager
    def __call__(self, total: int, label: str) -> Iterator[Callable[[int], None]]:
        self.total, self.made = total, 0

        def update(count: int) -> None:
            self.made += count

        yield update

    def status(self) -> str:
        if not self.total:
            return "speech still being made"
        return f"making speech {min(self.made, self.total)} of {self.total}"


class Coach:
    """The control API: what the keys do, also what tests drive.

    The session's timeline may still be growing while it plays (the phrases ahead are
    being made): the status line and the keys read what is laid so far
    (`Rendering.timeline_now`), and a step not laid yet cannot be skipped to. Once the
    whole timeline is laid, `on_complete` is told what was adapted to the options."""

    def __init__(self, session: Session, player: Player,
                 on_complete: Callable[[tuple[str, ...]], None] | None = None,
                 on_wait: Callable[[int], None] | None = None,
                 lead_in: LeadIn | None = None, making: Making | None = None) -> None:
        self.session = session
        self.making = making or Making()
        """Counts the phrases made while the session plays, if it was opened with it."""
        self.lead_in = lead_in
        """The player is already playing this (it started once the device opened)."""
        self.player = player
        self.on_complete = on_complete
        self.on_wait = on_wait
        self._told_wait: int | None = None
        self.quit = False
        self._started_at: float | None = None
        self._paused_at: float | None = None
        self._paused_s = 0.0
        self._told_complete = False
        self._laid: Timeline | None = None
        self._section_starts: list[int] = []
        self._event_starts: list[int] = []

    def _timeline(self) -> Timeline:
        """What is laid so far; its section and event starts worked out once per change."""
        laid = self.session.rendering.timeline_now()
        if laid is not self._laid:
            self._laid = laid
            self._section_starts = [s.start for s in laid.sections]
            self._event_starts = [e.start for e in laid.events]
        return laid

    @property
    def total(self) -> int:
        return self._timeline().duration_samples

    def poll(self) -> None:
        """Called by the run loop: tell `on_wait` once playback has reached a place where
        the stream waits for speech still being made (it is silent there, between two
        phrases); tell what was adapted once the timeline is whole."""
        waiting = self.session.rendering.waiting_at
        if waiting is not None and waiting != self._told_wait and not self.player.paused \
                and self.player.position_samples >= waiting:
            self._told_wait = waiting
            if self.on_wait is not None:
                self.on_wait(waiting)
        if not self._told_complete and self.session.rendering.complete:
            self._told_complete = True
            if self.on_complete is not None:
                self.on_complete(self.session.timeline.notices)

    def start(self) -> None:
        self._started_at = time.monotonic()
        rendering = self.session.rendering
        if self.lead_in is None:
            self.player.start(rendering.chunks())
        elif rendering.music is None:  # nothing under the lead-in: it was these samples
            self.lead_in.continue_with(rendering.chunks(self.lead_in.samples))
        else:  # music fades in under it: the session from its first sample after all
            self.player.replace(rendering.chunks(), 0)
            self.lead_in.cancel()

    @property
    def played_s(self) -> float:
        """Seconds of coaching heard, for the history: time since the start less pauses."""
        if self._started_at is None:
            return 0.0
        now = time.monotonic()
        paused = self._paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)
        return max(0.0, now - self._started_at - paused)

    def step_title(self) -> str:
        sections = self._timeline().sections
        return sections[self.section_index()].title if sections else ""

    @property
    def position(self) -> int:
        return min(self.player.position_samples, self.total)

    @property
    def percent(self) -> float:
        """How far into the session the playhead is, as the status line shows it."""
        return 100 * self.position / max(1, self.total)

    def toggle_pause(self) -> None:
        if self.player.paused:
            self.player.resume()
            if self._paused_at is not None:
                self._paused_s += time.monotonic() - self._paused_at
                self._paused_at = None
        else:
            self.player.pause()
            self._paused_at = time.monotonic()

    def jump(self, sample: int) -> None:
        self.player.replace(self.session.rendering.chunks(sample), sample)

    def section_index(self) -> int:
        self._timeline()
        return max(0, bisect.bisect_right(self._section_starts, self.position) - 1)

    def next_step(self) -> None:
        index = self.section_index() + 1
        if index < len(self._section_starts):
            self.jump(self._section_starts[index])
        elif self.session.rendering.complete:
            self.quit = True

    def restart_step(self) -> None:
        if self._timeline().sections:
            self.jump(self._section_starts[self.section_index()])

    def status(self) -> str:
        timeline = self._timeline()
        if not timeline.sections:
            return "paused" if self.player.paused else ""
        sr = timeline.sample_rate
        pos = self.position
        section = timeline.sections[self.section_index()]
        i = bisect.bisect_right(self._event_starts, pos) - 1
        label = timeline.events[i].label if i >= 0 and timeline.events[i].step == section.title else ""
        timed = timeline.spans_at(pos, "hold") or timeline.spans_at(pos, "rest")
        if timed:  # a 1-second hold says 1 s left, not 0
            left = f"{timed.kind} {_whole_seconds(timed.end - pos, sr)} s left"
        else:
            left = f"{_whole_seconds(max(0, section.end - pos), sr)} s left in step"
        whole = self.session.rendering.complete
        parts = [section.title, label, left,
                 f"{self.percent:.0f}%" if whole else self.making.status()]
        state = "paused · " if self.player.paused else ""
        return state + " · ".join(p for p in parts if p)

    def key(self, key: str) -> None:
        if key == " ":
            self.toggle_pause()
        elif key in ("n", "N"):
            self.next_step()
        elif key in ("b", "B"):
            self.restart_step()
        elif key in ("q", "Q"):
            self.quit = True


@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[None]:
    """Keys arrive one at a time, unechoed; the terminal is restored on every exit."""
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(coach: Coach, interactive: bool, out: TextIO = sys.stderr) -> str:
    """Play to the end (or until quit); returns 'completed' or 'stopped'."""
    coach.start()
    if not interactive:
        while not coach.player.wait(0.2):
            coach.poll()
        coach.poll()
        return "completed"
    fd = sys.stdin.fileno()
    out.write(KEYS_HELP + "\n")
    with _cbreak(sys.stdin):
        try:
            while not coach.quit:
                coach.poll()
                if coach.player.wait(0.0) and not coach.player.paused:
                    break
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    data = os.read(fd, 32).decode(errors="ignore")
                    if CTRL_C in data:  # a terminal that sends it as a key, not as SIGINT
                        raise KeyboardInterrupt
                    for key in data:
                        coach.key(key)
                out.write("\r\x1b[K" + coach.status())
                out.flush()
        finally:
            out.write("\r\x1b[K")
            out.flush()
    return "stopped" if coach.quit else "completed"


def _whole_seconds(samples: int, sample_rate: int) -> int:
    """Seconds left as a countdown shows them: rounded up, so "0 s" only at the end."""
    return -(-samples // sample_rate)
