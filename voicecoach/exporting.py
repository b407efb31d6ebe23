"""Export sessions: one rendered stream to a file, with chapters, captions and playlists."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .compile import Options
from .errors import UsageError
from .pipeline import Session, VoiceSettings, prepare


def _session(routine: Any, variation: str | None, options: dict[str, Any]) -> Session:
    return prepare(
        routine, variation,
        Options(options["level"], options["hold_s"], options["reps"]),
        VoiceSettings(options["voice"], options["rate_wpm"], options["volume"], options["engine"]),
    )


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    if not enabled:
        yield None
        return
    import sys

    import click

    bar: Any = click.progressbar(length=total, label=label, file=sys.stderr)
    with bar:
        yield bar.update


def write_session(session: Session, path: Path, *, channels: int = 1, captions: bool = False,
                  progress: bool = False) -> list[Path]:
    """Write one session's audio (and captions); returns the files written."""
    from .export import Caption, Chapter, format_for, write_audio, write_captions

    format_for(path)  # an unknown extension fails before any rendering
    timeline = session.timeline
    chapters = [Chapter(s.title, s.start, s.end) for s in timeline.sections]
    rendering = session.rendering
    with _progress_bar(progress, rendering.total_samples, f"Rendering {path.name}") as update:
        _ = rendering.gain  # measured before writing, so the bar tracks the file
        write_audio(path, rendering.chunks(), total_samples=rendering.total_samples,
                    sample_rate=timeline.sample_rate, channels=channels,
                    title=f"{timeline.title} ({timeline.variation})", chapters=chapters,
                    progress=update)
    written = [path]
    if captions:
        vtt = path.with_suffix(".vtt")
        write_captions(vtt, [Caption(e.value, e.start, e.end) for e in timeline.events
                             if e.kind == "speech"], timeline.sample_rate)
        written.append(vtt)
    return written


def export_one(routine: str, output: Path | None, options: dict[str, Any], *, channels: int = 1,
               captions: bool = False, progress: bool = False) -> list[Path]:
    session = _session(routine, options["variation"], options)
    if output is None:
        output = Path(f"{session.routine.id}-{session.timeline.variation}.mp3")
    elif output.is_dir():
        output = output / f"{session.routine.id}-{session.timeline.variation}.mp3"
    return write_session(session, output, channels=channels, captions=captions, progress=progress)


def export_all(routine: str, folder: Path, fmt: str, options: dict[str, Any], *, channels: int = 1,
               captions: bool = False, progress: bool = False) -> list[Path]:
    """One file per variation and an M3U playlist of them, in `folder`."""
    from .export import write_playlist
    from .load import load

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--all-variations needs a directory for -o, and '{folder}' is a file")
    if not folder.is_dir():
        raise UsageError(f"cannot write to '{folder}': directory does not exist")
    loaded = load(routine)
    written: list[Path] = []
    entries: list[tuple[str, str, float]] = []
    for variation in loaded.variations:
        session = _session(loaded, variation.name, options)
        path = folder / f"{loaded.id}-{variation.name}.{fmt}"
        written += write_session(session, path, channels=channels, captions=captions,
                                 progress=progress)
        entries.append((f"{loaded.title}: {variation.title}", path.name,
                        session.timeline.duration_s))
    playlist = folder / f"{loaded.id}.m3u"
    write_playlist(playlist, entries)
    return written + [playlist]
