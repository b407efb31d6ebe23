"""Wire the stages for one session: load, compile, schedule, then render on demand.

The CLI and tests call this; every stage stays a plain function of plain data.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from .compile import Options, Say, Script, Timed, compile_routine
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


Progress = Callable[[int, str], AbstractContextManager[Callable[[int], None] | None]]
"""Opens a progress display for a number of steps and a label; yields its update."""


def prepare(routine: Routine | str, variation: str | None = None,
            options: Options = DEFAULT_OPTIONS, voice: VoiceSettings = DEFAULT_VOICE,
            cache: PhraseCache | None = None, progress: Progress | None = None) -> Session:
    """Everything up to the timeline; audio is rendered only when its chunks are read.

    `progress`, if given, shows the phrases synthesized for a cold cache (a long session
    or the neural voice can take seconds)."""
    if isinstance(routine, str):
        routine = load(routine)
    script = compile_routine(routine, variation, options)
    cache = cache or phrase_cache(voice)
    texts = _spoken(script)
    cache.expect(texts)  # a cold cache's engine starts while the tones load
    tones = ToneBank(routine.sounds, _base_dir(routine))
    missing = cache.missing(texts) if progress is not None else 0
    if progress is not None and missing:
        with progress(missing, "Synthesizing speech") as update:
            cache.on_synthesized = update
            try:
                cache.prefetch(texts)
            finally:
                cache.on_synthesized = None
    else:
        cache.prefetch(texts)
    timeline = schedule(script, cache.length, tones.length)
    return Session(routine, timeline, Rendering(timeline, cache, tones))


def _spoken(script: Script) -> list[str]:
    """The words of every spoken cue, including those inside timed windows."""
    texts = []
    for cue in script.cues:
        if isinstance(cue, Say):
            texts.append(cue.text)
        elif isinstance(cue, Timed):
            texts.extend(m.cue.text for m in cue.marks if isinstance(m.cue, Say))
    return texts
