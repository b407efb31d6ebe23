"""Wire the stages for one session: load, compile, schedule, then render on demand.

The CLI and tests call this; every stage stays a plain function of plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .compile import Options, compile_routine
from .load import load
from .model import Routine
from .render import Rendering, ToneBank
from .schedule import Timeline, schedule
from .errors import UsageError
from .speech import Espeak, PhraseCache, Synthesizer

ENGINES = ("espeak", "piper")


@dataclass(frozen=True)
class VoiceSettings:
    voice: str | None = None
    rate_wpm: int | None = None
    volume: float = 1.0
    engine: str = "espeak"


@dataclass
class Session:
    routine: Routine
    timeline: Timeline
    rendering: Rendering


def phrase_cache(voice: VoiceSettings | None = None) -> PhraseCache:
    voice = voice or VoiceSettings()
    return PhraseCache(synthesizer(voice))


def synthesizer(voice: VoiceSettings) -> Synthesizer:
    """The engine by name; the neural one is imported only when asked for."""
    if voice.engine == "espeak":
        return Espeak(voice.voice, voice.rate_wpm, voice.volume)
    if voice.engine == "piper":
        from .piper import Piper

        return Piper(voice.voice, voice.rate_wpm, voice.volume)
    raise UsageError(f"unknown engine '{voice.engine}': valid: {', '.join(ENGINES)}")


def _base_dir(routine: Routine) -> Path | None:
    path = Path(routine.file)
    return path.parent if path.is_file() else None


DEFAULT_OPTIONS = Options()
DEFAULT_VOICE = VoiceSettings()


def prepare(routine: Routine | str, variation: str | None = None,
            options: Options = DEFAULT_OPTIONS, voice: VoiceSettings = DEFAULT_VOICE,
            cache: PhraseCache | None = None) -> Session:
    """Everything up to the timeline; audio is rendered only when its chunks are read."""
    if isinstance(routine, str):
        routine = load(routine)
    script = compile_routine(routine, variation, options)
    cache = cache or phrase_cache(voice)
    tones = ToneBank(routine.sounds, _base_dir(routine))
    timeline = schedule(script, cache.length, tones.length)
    gains = cache.folder.parent / "gains"
    return Session(routine, timeline, Rendering(timeline, cache, tones, gain_cache=gains))
