"""Wire the stages for one session: load, compile, schedule, then render on demand.

The CLI and tests call this; every stage stays a plain function of plain data.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import SAMPLE_RATE
from .compile import Say, Script, Timed, compile_routine
from .load import load
from .model import Routine
from .render import Rendering, ToneBank
from .schedule import Timeline, schedule
from .errors import Problem, RoutineError, UsageError
from .speech import Espeak, PhraseCache, Synthesizer
from .spec import ENGINES, LEVELS, MusicSettings, Options, SessionSpec, VoiceSettings

if TYPE_CHECKING:
    from .music import Track


@dataclass
class Session:
    """A session ready to play or export: what was asked for, the routine it was made
    from, and its audio (rendered when its chunks are read). Its timeline may still be
    growing (`open_session(stream=True)`): `timeline` waits for the whole of it,
    `rendering.timeline_now()` gives what is laid so far."""

    spec: SessionSpec
    routine: Routine
    rendering: Rendering

    @property
    def timeline(self) -> Timeline:
        return self.rendering.timeline


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


def check_voice(voice: VoiceSettings) -> None:
    """UsageError now if the voice cannot speak (unknown name, model or engine), for a
    command that speaks later: espeak-ng's helper is started and kept for it."""
    synth = synthesizer(voice)  # piper's voice is found here
    if isinstance(synth, Espeak):
        synth.check()


def _base_dir(routine: Routine) -> Path | None:
    path = Path(routine.file)
    return path.parent if path.is_file() else None


DEFAULT_OPTIONS = Options()


Progress = Callable[[int, str], AbstractContextManager[Callable[[int], None] | None]]
"""Opens a progress display for a number of steps and a label; yields its update."""


def open_session(spec: SessionSpec, *, cache: PhraseCache | None = None,
                 progress: Progress | None = None, stream: bool = False) -> Session:
    """The way in for a front end: the session a spec asks for (see `prepare`)."""
    return prepare(spec.routine, spec.variation, spec.options, spec.voice, cache, progress,
                   spec.music, stream=stream)


def prepare(routine: Routine | str, variation: str | None = None,
            options: Options = DEFAULT_OPTIONS, voice: VoiceSettings | None = None,
            cache: PhraseCache | None = None, progress: Progress | None = None,
            music: MusicSettings | None = None, *, stream: bool = False) -> Session:
    """Everything up to the timeline; audio is rendered only when its chunks are read.

    `progress`, if given, shows the phrases synthesized for a cold cache (a long session
    or the neural voice can take seconds). Music is checked before any speech is made.

    With `stream`, this returns at once: phrases are made in session order in the
    background (two at a time) and the timeline is laid as their lengths become known,
    so the first chunk can be played while the rest is made (see render.Rendering). The
    samples are the same as without. Music streams too: its first track is measured (or
    its measurement read from the cache) beside the first phrases."""
    if isinstance(routine, str):
        routine = load(routine)
    voice = voice or VoiceSettings()
    music = music or MusicSettings()
    tracks = _music_tracks(music, routine)
    script = compile_routine(routine, variation, options)
    cache = cache or phrase_cache(voice)
    texts = _spoken(script)
    cache.expect(texts)  # a cold cache's engine starts while the tones load
    tones = ToneBank(routine.sounds, _base_dir(routine))
    spec = SessionSpec(routine, script.variation, options, voice, music)
    adapt = not is_plain(options, voice)
    bus = None
    if tracks:
        from .music import MusicBus

        folder = getattr(cache, "folder", None)  # the cache's phrases/: music/ goes beside it
        bus = MusicBus(tracks, SAMPLE_RATE, music.level_lu,
                       store=None if folder is None else Path(folder).parent / "music")
    if stream:
        rendering = Rendering(None, cache, tones, music=bus)
        _lay_in_background(script, texts, cache, tones, rendering, adapt, progress)
        return Session(spec, routine, rendering)
    _synthesize(cache, texts, progress)
    timeline = schedule(script, cache.length, tones.length, adapt=adapt)
    return Session(spec, routine, Rendering(timeline, cache, tones, music=bus))


def _music_tracks(music: MusicSettings, routine: Routine) -> tuple[Track, ...]:
    """The tracks to play under the voice: --music, else the routine's `music:` (relative
    to the routine file), each checked from its header; none with `off`."""
    if music.off or (music.path is None and not routine.music):
        return ()
    from .music import find_tracks

    if music.path is not None:
        return find_tracks(Path(music.path), shuffle=music.shuffle, seed=music.seed)
    assert routine.music is not None
    base = _base_dir(routine)
    path = Path(routine.music) if base is None else base / routine.music
    return find_tracks(path, shuffle=music.shuffle, seed=music.seed,
                       label=f"{routine.file}: music: ")


def _lay_in_background(script: Script, texts: list[str], cache: PhraseCache, tones: ToneBank,
                       rendering: Rendering, adapt: bool, progress: Progress | None) -> None:
    """Two daemon threads: one makes the phrases in session order (prefetch, two at a
    time), the other lays the timeline, taking each phrase's length as it is made (or
    waiting for it) and handing what is laid to the rendering."""
    def make() -> None:
        with contextlib.suppress(BaseException):  # the layer meets the same error, and reports it
            _synthesize(cache, texts, progress)

    def lay() -> None:
        try:
            if rendering.music is not None:  # the first track, measured beside the first phrases
                rendering.music.measured(0)
            timeline = schedule(script, cache.length, tones.length, adapt=adapt,
                                on_laid=rendering.extend)
        except BaseException as e:  # noqa: BLE001 - handed to whoever reads the stream
            rendering.fail(e)
        else:
            rendering.finish(timeline)

    from .parallel import workers_deaf

    with workers_deaf():  # a stop signal goes to the main thread, which is playing
        threading.Thread(target=make, name="voicecoach-make", daemon=True).start()
        threading.Thread(target=lay, name="voicecoach-lay", daemon=True).start()


def is_plain(options: Options, voice: VoiceSettings) -> bool:
    """The routine as written, in the voice `validate` checks it with: what does not fit is
    the routine's fault. Anything else is the person's choice, and is adapted to."""
    return options.hold_s is None and options.reps is None and voice == VoiceSettings()


def describe_voice(voice: VoiceSettings) -> dict[str, str | int]:
    """What a session will sound like, for scripts: engine, voice name and rate."""
    from .speech import DEFAULT_RATE_WPM

    if voice.engine == "piper":
        from .piper import BUNDLED_VOICE

        name = voice.voice or BUNDLED_VOICE
    else:
        name = voice.voice or "en"
    return {"engine": voice.engine, "name": name, "rate": voice.rate_wpm or DEFAULT_RATE_WPM}


def _synthesize(cache: PhraseCache, texts: list[str], progress: Progress | None) -> None:
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


def check(routine: Routine, cache: PhraseCache | None = None,
          progress: Progress | None = None) -> None:
    """Everything `show`, `export` and `play` run on a routine short of making sound, for
    every variation at every level, in the default voice: if this passes, they work. Raises
    RoutineError with every problem found, each once."""
    cache = cache or phrase_cache()
    tones = ToneBank(routine.sounds, _base_dir(routine))
    found: dict[Problem, list[str]] = {}
    scripts: list[tuple[str, Script]] = []
    combos = [(v, level) for v in routine.variation_names for level in LEVELS]
    for variation, level in combos:
        where = f"variation {variation}, level {level}" if len(routine.variations) > 1 \
            else f"level {level}"
        try:
            scripts.append((where, compile_routine(routine, variation, Options(level))))
        except RoutineError as e:
            for p in e.problems:
                found.setdefault(p, []).append(where)
    _synthesize(cache, list(dict.fromkeys(t for _, s in scripts for t in _spoken(s))), progress)
    for where, script in scripts:
        try:
            schedule(script, cache.length, tones.length)
        except RoutineError as e:
            for p in e.problems:
                found.setdefault(p, []).append(where)
    if found:
        problems = [p if len(at) == len(combos) else replace(p, message=f"{p.message} (at {'; '.join(at)})")
                    for p, at in found.items()]
        raise RoutineError(sorted(problems, key=lambda p: (p.line, p.column)))


def _spoken(script: Script) -> list[str]:
    """The words of every spoken cue, including those inside timed windows."""
    texts = []
    for cue in script.cues:
        if isinstance(cue, Say):
            texts.append(cue.text)
        elif isinstance(cue, Timed):
            texts.extend(m.cue.text for m in cue.marks if isinstance(m.cue, Say))
    return texts
