"""Export: write a session to an audio file (and captions), or every variation of a
routine beside an M3U playlist. The files themselves are audiofile.py's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .audiofile import (
    FORMATS,
    Caption,
    Chapter,
    Seekable,
    check_playlist_name,
    format_for,
    write_audio,
    write_captions,
    write_playlist,
)
from . import parallel
from .errors import UsageError
from .files import check_target, is_dir, make_folder
from .pipeline import Progress, Session, open_session, phrase_cache
from .schedule import Timeline
from .spec import SessionSpec

WORKERS = 2
"""Files written at once by --all-variations: the development machine's two cores."""

CHUNK_SAMPLES = 4 * 22050
"""Samples mixed and encoded at a time: bigger than play's chunks, as nobody waits for
the first; a 9-minute WAV took 60 ms of CPU to mix and write in 1-second chunks, 40 ms
in 4-second ones (the same bytes in every format)."""

Notify = Callable[[Session], None]
"""Called with each session once it is made, before it is written (the CLI prints what
was adapted to the person's options)."""


@contextmanager
def _no_progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    yield None


def _check_outputs(audio: Path, captions: bool, *others: Path) -> None:
    """Before any rendering: an unknown extension, or a path that cannot be a regular file
    (a device, a FIFO, a directory), fails at once and every file is left as it was."""
    format_for(audio)
    for path in (audio, *([audio.with_suffix(".vtt")] if captions else []), *others):
        check_target(path)


def write_session(session: Session, path: Path, *, channels: int = 1, captions: bool = False,
                  progress: Progress | None = None) -> list[Path]:
    """Write one session's audio (and captions); returns the files written."""
    _check_outputs(path, captions)
    total = session.rendering.total_samples
    with (progress or _no_progress)(total, f"Rendering {path.name}") as update:
        return _write(session, path, channels=channels, captions=captions, update=update)


def _write(session: Session, path: Path, *, channels: int, captions: bool,
           update: Callable[[int], None] | None,
           stop: Callable[[], None] | None = None) -> list[Path]:
    """The files of one session; `stop` is called before each chunk, to raise if the
    export was stopped while this one runs in a worker thread."""
    timeline = session.timeline
    chapters = [Chapter(s.title, s.start, s.end) for s in timeline.sections]
    rendering = session.rendering
    def read(start: int, end: int) -> Iterable[npt.NDArray[np.floating]]:
        chunks = rendering.chunks(start, end, CHUNK_SAMPLES)
        return chunks if stop is None else parallel.checked(chunks, stop)

    # an MP3 may be cut at a silence and made by two encoders at once (mp3.py), alone or
    # beside other files: the same bytes either way. Music fills the silences: one encoder.
    silences = _silences(timeline) if rendering.music is None else []
    audio = Seekable(read, silences)
    write_audio(path, audio,
                total_samples=rendering.total_samples, sample_rate=timeline.sample_rate,
                channels=channels, title=f"{timeline.title} ({timeline.variation})",
                chapters=chapters, progress=update)
    written = [path]
    if captions:
        vtt = path.with_suffix(".vtt")
        write_captions(vtt, [Caption(e.value, e.start, e.end) for e in timeline.events
                             if e.kind == "speech"], timeline.sample_rate)
        written.append(vtt)
    return written


def _silences(timeline: Timeline) -> list[tuple[int, int]]:
    """The spans between the timeline's sounds (nothing is mixed outside its events)."""
    spans = []
    reached = 0
    for event in sorted(timeline.events, key=lambda e: e.start):
        if event.start > reached:
            spans.append((reached, event.start))
        reached = max(reached, event.end)
    if reached < timeline.duration_samples:
        spans.append((reached, timeline.duration_samples))
    return spans


def export_one(spec: SessionSpec, output: Path | None, fmt: str | None = None, *,
               channels: int = 1, captions: bool = False, progress: Progress | None = None,
               notify: Notify | None = None) -> list[Path]:
    """One session to `output`: a file (its extension is the format), a folder, or None
    (ROUTINE-VARIATION.mp3 here); `fmt` names the format for the last two, and must agree
    with a file's extension."""
    if output is not None and not is_dir(output):
        make_folder(output.parent)
        if fmt is not None and output.suffix.lower() != f".{fmt}":
            raise UsageError(f"--format {fmt} does not match '{output}': give -o a .{fmt} name, "
                             "or leave --format out (the extension decides)")
        _check_outputs(output, captions)  # before any speech is made
    session = open_session(spec, progress=progress)
    if notify:
        notify(session)
    name = f"{session.routine.id}-{session.timeline.variation}.{fmt or 'mp3'}"
    if output is None:
        output = Path(name)
    elif is_dir(output):
        output = output / name
    return write_session(session, output, channels=channels, captions=captions, progress=progress)


def export_all(spec: SessionSpec, folder: Path, fmt: str, *, channels: int = 1,
               captions: bool = False, progress: Progress | None = None,
               notify: Notify | None = None) -> list[Path]:
    """One file per variation and an M3U playlist of them, in `folder`.

    The sessions are made one after the other (their phrases are shared through the cache,
    and each one's notices are told in order), then written two at a time: encoding is
    most of the time, and the encoders (LAME, libsndfile) let go of Python's lock, so two
    threads keep both cores busy. Each file is the same bytes as written alone."""
    from .load import load

    if not is_dir(folder):
        if folder.suffix.lower() in FORMATS:
            raise UsageError(f"--all-variations writes one file per variation into a folder: give "
                             f"-o a folder, not '{folder}' (--format picks the file type)")
        if os.path.lexists(folder):
            raise UsageError(f"--all-variations needs a folder for -o, and '{folder}' is a file")
        make_folder(folder)
    loaded = load(spec.routine) if isinstance(spec.routine, str) else spec.routine
    playlist = folder / f"{loaded.id}.m3u"
    paths = [folder / f"{loaded.id}-{variation.name}.{fmt}" for variation in loaded.variations]
    for path in paths:  # before any rendering: names the playlist cannot hold, devices, FIFOs
        check_playlist_name(playlist, path.name)
        _check_outputs(path, captions)
    check_target(playlist)
    sessions: list[Session] = []
    cache = phrase_cache(spec.voice)  # one for all: a phrase they share is checked once
    for variation in loaded.variations:
        session = open_session(replace(spec, routine=loaded, variation=variation.name),
                               cache=cache, progress=progress)
        if notify:
            notify(session)
        sessions.append(session)
    total = sum(session.rendering.total_samples for session in sessions)
    label = f"Rendering {len(paths)} files" if len(paths) > 1 else f"Rendering {paths[0].name}"
    with (progress or _no_progress)(total, label) as update:
        shared_update = parallel.locked(update)
        jobs = [functools.partial(_write, session, path, channels=channels, captions=captions,
                                  update=shared_update)
                for session, path in zip(sessions, paths, strict=True)]
        written = [file for files in parallel.run(jobs, workers=WORKERS) for file in files]
    write_playlist(playlist, [(f"{loaded.title}: {variation.title}", path.name,
                               session.timeline.duration_s)
                              for variation, path, session in zip(loaded.variations, paths,
                                                                  sessions, strict=True)])
    return written + [playlist]
