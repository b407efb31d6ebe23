"""Audio files: formats, encoding, tags, chapters, captions and playlists.

Knows nothing of sessions: it writes a stream of samples with its chapters (export.py
hands it a session's). Every file is written through `files.atomic_path` (a temporary file beside the target,
fsynced, then renamed over it; regular files only), so an interrupted export never
leaves a half-written file behind and never damages the file it was meant to replace.
"""

from __future__ import annotations

import os

import math
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from voicecoach import SAMPLE_RATE
from voicecoach.errors import AudioError, UsageError
from voicecoach.files import (
    atomic_path,
    check_space,
    describe_os_error,
    free_bytes,
)

__all__ = [
    "FORMATS",
    "Caption",
    "Chapter",
    "Seekable",
    "check_playlist_name",
    "format_for",
    "write_audio",
    "write_captions",
    "write_playlist",
]


@dataclass(frozen=True)
class Chapter:
    """One step of the session, so a player can show and skip to it."""

    title: str
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class Caption:
    """One spoken phrase, for a captions track beside the audio."""

    text: str
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class Seekable:
    """Audio read from any sample on (a Rendering's chunks), with the spans known to be
    silent: an MP3 is then cut at a silence near its middle and made by two encoders at
    once (mp3.py), and is the same length and timing as one encoder's."""

    read: Callable[[int, int], Iterable[npt.NDArray[np.floating]]]
    silences: Sequence[tuple[int, int]]


FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
"""File extension to soundfile's major format name."""


@dataclass(frozen=True)
class _Encoding:
    """How each format is encoded; lossy settings are chosen for spoken word."""

    subtype: str
    compression_level: float | None = None
    bitrate_mode: str | None = None


_ENCODINGS: dict[str, _Encoding] = {
    "WAV": _Encoding("PCM_16"),
    "FLAC": _Encoding("PCM_16"),
    # libsndfile maps compression_level c to Vorbis quality 1 - c: this is quality 0.4,
    # the lowest that passes scripts/lossy_settings.py (24.8 kbps mono, 30.5 stereo, for
    # mid-back-knot); at 0.3 the decoded session is 0.06 LU louder than the WAV.
    "OGG": _Encoding("VORBIS", compression_level=0.6),
    # MP3 is encoded by LAME directly (mp3.py), not through libsndfile.
}

_EXTENSIONS_HINT = "use .wav, .flac, .ogg or .mp3"


def format_for(path: Path) -> str:
    """The format a file is written in, chosen by its extension as people expect."""
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if not suffix:
        raise UsageError(f"cannot export to '{path}': no extension ({_EXTENSIONS_HINT})")
    raise UsageError(
        f"cannot export to '{path}': unknown extension '{path.suffix}' ({_EXTENSIONS_HINT})"
    )


# --- audio ----------------------------------------------------------------------------


def _ms(samples: int, sample_rate: int) -> int:
    """Samples to whole milliseconds, rounding half up (times are never negative)."""
    return (samples * 1000 + sample_rate // 2) // sample_rate


def _clock(ms: int) -> str:
    """HH:MM:SS.mmm, the time format of WebVTT and of Vorbis chapter comments."""
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def _check_chapters(chapters: Sequence[Chapter], total_samples: int) -> None:
    """Chapters out of order or outside the audio are a caller bug, caught before writing."""
    previous_start = 0
    for chapter in chapters:
        if not 0 <= chapter.start_sample <= chapter.end_sample <= total_samples:
            raise ValueError(f"chapter {chapter} lies outside 0..{total_samples} samples")
        if chapter.start_sample < previous_start:
            raise ValueError(f"chapter {chapter} starts before the chapter ahead of it")
        previous_start = chapter.start_sample


def _to_pcm16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float in [-1, 1] to 16-bit PCM as libsndfile does it (times 32767, rounded), clipped:
    numpy does it in a third of libsndfile's time."""
    scaled = samples * np.float32(32767)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(np.int16)


class _WriteFailed(Exception):
    """The encoder could not write the file; the message is the reason, in a person's words."""


def _libsndfile_reason(sound_file: sf.SoundFile | None, error: sf.LibsndfileError) -> str:
    """Why libsndfile failed. For a failed read or write python-soundfile says only
    "System error."; libsndfile itself kept the system's words ("System error : No space
    left on device."), which are asked for here (for a file not yet open, its last error)."""
    try:
        handle = getattr(sound_file, "_file", None) or sf._ffi.NULL
        text = str(sf._ffi.string(sf._snd.sf_strerror(handle)).decode(errors="replace"))
    except Exception:  # python-soundfile's internals moved: keep its own message
        text = ""
    prefix = "System error : "
    if text.startswith(prefix):
        return text[len(prefix):].rstrip(".").lower()
    return str(error)


def _closing_reason(temp_path: Path, error: sf.LibsndfileError) -> str:
    """Why closing (the encoder's last write) failed: libsndfile freed the file and its
    words with it, so a system error on a disk with (next to) nothing left is called so."""
    free = free_bytes(temp_path.parent)
    if error.code == _SFE_SYSTEM and free is not None and free < 64 * 1024:
        return "no space left on device"
    return str(error)


_SFE_SYSTEM = 2
"""libsndfile's error code for a failed system call."""


def _encode(
    temp_path: Path,
    format_name: str,
    chunks: Iterable[npt.NDArray[np.floating]] | Seekable,
    *,
    total_samples: int,
    sample_rate: int,
    channels: int,
    title: str,
    artist: str,
    progress: Callable[[int], None] | None,
) -> None:
    """Stream chunks into the encoder one at a time, so memory stays flat.

    A failed write (a full disk) stops the export at that chunk, with the system's reason.
    """
    if format_name == "MP3":
        _encode_mp3(temp_path, chunks, total_samples=total_samples, sample_rate=sample_rate,
                    channels=channels, progress=progress)
        return
    if isinstance(chunks, Seekable):
        if format_name == "OGG":
            from . import vorbis

            cut = vorbis.find_cut(total_samples, chunks.silences)
            if cut is not None:
                _encode_vorbis_split(temp_path, chunks, cut, total_samples=total_samples,
                                     sample_rate=sample_rate, channels=channels,
                                     progress=progress)
                return
        chunks = chunks.read(0, total_samples)
    _write_sndfile(os.fsencode(temp_path), temp_path, format_name, chunks,
                   total_samples=total_samples, sample_rate=sample_rate, channels=channels,
                   title=title, artist=artist, progress=progress)


def _write_sndfile(
    target: bytes | int,
    temp_path: Path,
    format_name: str,
    chunks: Iterable[npt.NDArray[np.floating]],
    *,
    total_samples: int,
    sample_rate: int,
    channels: int,
    title: str = "",
    artist: str = "",
    progress: Callable[[int], None] | None,
) -> None:
    """libsndfile's encoder for the format, into `target` (the temporary file's name as
    bytes, or an open file's descriptor, left open), in the folder of `temp_path`."""
    encoding = _ENCODINGS[format_name]
    try:
        sound_file = sf.SoundFile(
            target,  # a name as bytes: soundfile cannot encode a non-UTF-8 name
            "w",
            samplerate=sample_rate,
            channels=channels,
            subtype=encoding.subtype,
            format=format_name,
            compression_level=encoding.compression_level,
            bitrate_mode=encoding.bitrate_mode,
            closefd=False,
        )
    except sf.LibsndfileError as error:
        raise _WriteFailed(_libsndfile_reason(None, error)) from error
    finished = False
    try:
        if format_name == "WAV":  # a LIST INFO chunk; other formats are tagged by mutagen
            if title:
                sound_file.title = title
            if artist:
                sound_file.artist = artist
        for samples in _counted(chunks, total_samples):  # refused if too many or too few
            out: npt.NDArray[Any] = _to_pcm16(samples) if encoding.subtype == "PCM_16" else samples
            sound_file.write(out if channels == 1 else np.column_stack((out, out)))
            if progress is not None:
                progress(len(samples))
        finished = True
    except sf.LibsndfileError as error:
        raise _WriteFailed(_libsndfile_reason(sound_file, error)) from error
    finally:
        try:
            sound_file.close()  # flushes the encoder: this write can fail too
        except sf.LibsndfileError as error:
            if finished:  # else the first failure is the one worth reporting
                raise _WriteFailed(_closing_reason(temp_path, error)) from error


class _Beside(threading.Thread):
    """A job in a thread of its own, given an Event that asks it to stop; its error is
    kept for the thread that waits for it. Started in parallel.workers_deaf."""

    def __init__(self, job: Callable[[threading.Event], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.job = job
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.job(self.stopping)
        except BaseException as error:  # handed to the waiting thread
            self.error = error


def _silent_over(chunks: Iterable[npt.NDArray[np.floating]], start: int, low: int, high: int,
                 cut: int) -> Iterator[npt.NDArray[np.floating]]:
    """The chunks (from sample `start` on), refused if any sample in [low, high) is not 0."""
    at = start
    for chunk in chunks:
        a, b = max(at, low), min(at + len(chunk), high)
        if a < b and np.any(chunk[a - at: b - at]):
            raise AssertionError(f"the samples around the cut at {cut} are not silent")
        at += len(chunk)
        yield chunk


def _encode_vorbis_split(
    temp_path: Path,
    source: Seekable,
    cut: int,
    *,
    total_samples: int,
    sample_rate: int,
    channels: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Two libvorbis encoders at once, one on each side of `cut` (vorbis.find_cut): the
    second in a thread (libsndfile lets go of Python's lock), into an unnamed file beside
    the temporary one; then its packets are joined to the first's in one logical stream
    (vorbis.join), or, if the join is refused, the session encoded again by one encoder.
    Decodes to total_samples exactly."""
    from . import vorbis
    from .parallel import Stopped, checked, locked, workers_deaf

    counted = locked(progress)  # both encoders count their samples

    def part(start: int, end: int) -> Iterable[npt.NDArray[np.floating]]:
        return _silent_over(source.read(start, end), start, cut - vorbis.GUARD,
                            cut + vorbis.GUARD, cut)

    try:
        spill = tempfile.TemporaryFile(dir=temp_path.parent)
    except OSError as error:
        raise _WriteFailed(error.strerror or str(error)) from error
    with spill:
        def second_half(stopping: threading.Event) -> None:
            def stop() -> None:
                if stopping.is_set():
                    raise Stopped("stopped")

            _write_sndfile(spill.fileno(), temp_path, "OGG",
                           checked(part(cut, total_samples), stop),
                           total_samples=total_samples - cut, sample_rate=sample_rate,
                           channels=channels, progress=counted)

        second = _Beside(second_half, "voicecoach-ogg")
        with workers_deaf():
            second.start()

        def first_stop() -> None:
            if second.error is not None:  # a full disk: stop now, not at the cut
                raise second.error

        try:
            _write_sndfile(os.fsencode(temp_path), temp_path, "OGG",
                           checked(part(0, cut), first_stop), total_samples=cut,
                           sample_rate=sample_rate, channels=channels, progress=counted)
            second.join()
        except BaseException:  # a signal, a full disk: the second encoder stops too
            second.stopping.set()
            second.join()
            raise
        if second.error is not None:
            raise second.error
        try:
            spill.seek(0)
            joined = spill.read()
            with temp_path.open("r+b") as out:
                vorbis.join(out, joined, cut=cut, total_samples=total_samples)
            return
        except vorbis.CannotJoin:
            pass  # encoded again below, by one encoder
        except OSError as error:
            raise _WriteFailed(error.strerror or str(error)) from error
    _write_sndfile(os.fsencode(temp_path), temp_path, "OGG", source.read(0, total_samples),
                   total_samples=total_samples, sample_rate=sample_rate, channels=channels,
                   progress=None)  # every sample was counted once already


def _counted(chunks: Iterable[npt.NDArray[np.floating]],
             total_samples: int) -> Iterator[npt.NDArray[np.float32]]:
    """Mono float32 chunks, refused if they run past (or stop short of) total_samples."""
    written_samples = 0
    for chunk in chunks:
        samples = np.asarray(chunk, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono 1-D chunks, got shape {samples.shape}")
        written_samples += len(samples)
        if written_samples > total_samples:
            raise ValueError(f"chunks run past total_samples={total_samples}")
        yield samples
    if written_samples != total_samples:
        raise ValueError(f"chunks held {written_samples} samples, expected {total_samples}")


def _encode_mp3(
    temp_path: Path,
    chunks: Iterable[npt.NDArray[np.floating]] | Seekable,
    *,
    total_samples: int,
    sample_rate: int,
    channels: int,
    progress: Callable[[int], None] | None,
) -> None:
    """LAME through lameenc (mp3.py says why not libsndfile), into the temporary file: by
    two encoders at once when the audio can be cut at a silence."""
    from . import mp3

    cut = None
    if isinstance(chunks, Seekable):
        cut = mp3.find_cut(total_samples, chunks.silences, sample_rate)
        source = chunks
        if cut is None:
            chunks = source.read(0, total_samples)
    try:
        with temp_path.open("wb") as out:
            if cut is not None:
                def read(start: int, end: int) -> Iterator[npt.NDArray[np.int16]]:
                    for samples in _counted(source.read(start, end), end - start):
                        yield _to_pcm16(samples)

                from .parallel import locked

                mp3.encode_split(read, out, total_samples=total_samples, cut=cut,
                                 sample_rate=sample_rate, channels=channels,
                                 spill_dir=temp_path.parent, on_chunk=locked(progress))
                return
            assert not isinstance(chunks, Seekable)
            stream = mp3.Mp3Stream(out, sample_rate, channels)
            for samples in _counted(chunks, total_samples):
                stream.write(_to_pcm16(samples))
                if progress is not None:
                    progress(len(samples))
            stream.close()
    except OSError as error:
        raise _WriteFailed(error.strerror or str(error)) from error


def _tag_mp3(
    temp_path: Path, title: str, artist: str, chapters: Sequence[Chapter], sample_rate: int
) -> None:
    """ID3v2.4 with CHAP frames and one ordered top-level CTOC, as podcast players read."""
    import mutagen.id3

    id3: Any = mutagen.id3  # py.typed, but its constructors are unannotated
    _CHAP, _CTOC, _TIT2, _TPE1 = id3.CHAP, id3.CTOC, id3.TIT2, id3.TPE1
    tags = id3.ID3()
    if title:
        tags.add(_TIT2(encoding=3, text=[title]))
    if artist:
        tags.add(_TPE1(encoding=3, text=[artist]))
    if chapters:
        element_ids = [f"ch{index}" for index in range(len(chapters))]
        tags.add(
            _CTOC(
                element_id="toc",
                flags=id3.CTOCFlags.TOP_LEVEL | id3.CTOCFlags.ORDERED,
                child_element_ids=element_ids,
                sub_frames=[],
            )
        )
        for element_id, chapter in zip(element_ids, chapters, strict=True):
            tags.add(
                _CHAP(
                    element_id=element_id,
                    start_time=_ms(chapter.start_sample, sample_rate),
                    end_time=_ms(chapter.end_sample, sample_rate),
                    sub_frames=[_TIT2(encoding=3, text=[chapter.title])],
                )
            )
    tags.save(temp_path, v2_version=4)


def _tag_vorbis_comments(
    temp_path: Path,
    format_name: str,
    title: str,
    artist: str,
    chapters: Sequence[Chapter],
    sample_rate: int,
) -> None:
    """Vorbis comments, chapters as CHAPTERnnn / CHAPTERnnnNAME (the Matroska convention)."""
    import mutagen.flac
    import mutagen.oggvorbis

    kind: Any = mutagen.flac.FLAC if format_name == "FLAC" else mutagen.oggvorbis.OggVorbis
    audio = kind(temp_path)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if title:
        tags["TITLE"] = [title]
    if artist:
        tags["ARTIST"] = [artist]
    for number, chapter in enumerate(chapters, start=1):
        tags[f"CHAPTER{number:03d}"] = [_clock(_ms(chapter.start_sample, sample_rate))]
        tags[f"CHAPTER{number:03d}NAME"] = [chapter.title]
    audio.save()


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind a wrapped one (mutagen raises its own type around it), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _TagError(Exception):
    """mutagen could not tag the file (mutagen is imported only to tag, never for WAV)."""


def _tag(temp_path: Path, format_name: str, title: str, artist: str,
         chapters: Sequence[Chapter], sample_rate: int) -> None:
    import mutagen

    try:
        if format_name == "MP3":
            _tag_mp3(temp_path, title, artist, chapters, sample_rate)
        elif format_name in ("OGG", "FLAC"):
            _tag_vorbis_comments(temp_path, format_name, title, artist, chapters, sample_rate)
    except mutagen.MutagenError as error:
        raise _TagError(str(error)) from error


def _least_bytes(format_name: str, total_samples: int, sample_rate: int, channels: int) -> int:
    """A floor on the encoded size: exact for WAV's samples; for MP3, every frame at the
    lowest bitrate (8 kbps in MPEG-2 and 2.5, 32 kbps in MPEG-1). Vorbis and FLAC can
    shrink silence too far for a useful floor: they fail where the disk fills."""
    if format_name == "WAV":
        return 44 + total_samples * 2 * channels
    if format_name == "MP3":
        mpeg1 = sample_rate >= 32000
        frame_samples, kbps, factor = (1152, 32, 144) if mpeg1 else (576, 8, 72)
        frames = -(-total_samples // frame_samples)
        return frames * (factor * kbps * 1000 // sample_rate)
    return 0


def write_audio(
    path: Path,
    chunks: Iterable[npt.NDArray[np.floating]] | Seekable,
    *,
    total_samples: int,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
    title: str = "",
    artist: str = "voicecoach",
    chapters: Sequence[Chapter] = (),
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a mono session to `path` (format by extension), tagged, atomically.

    `channels=2` duplicates the signal, for players that mishandle mono. `progress` is
    called with each chunk's sample count. The decoded file has exactly total_samples
    samples, aligned with the input, in every format (MP3 through LAME's gapless header).
    """
    format_name = format_for(path)
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if total_samples < 1:
        raise ValueError("an MP3 without frames is unreadable, so total_samples must be >= 1")
    _check_chapters(chapters, total_samples)
    # a disk that cannot hold even the smallest such file fails now, not minutes of encoding later
    check_space(path, _least_bytes(format_name, total_samples, sample_rate, channels))
    with atomic_path(path) as temp_path:
        try:
            _encode(
                temp_path,
                format_name,
                chunks,
                total_samples=total_samples,
                sample_rate=sample_rate,
                channels=channels,
                title=title,
                artist=artist,
                progress=progress,
            )
            if format_name != "WAV":
                _tag(temp_path, format_name, title, artist, chapters, sample_rate)
            # libsndfile's MP3 encoder only logs a short write (it is stopped by the error
            # its file layer records), so the finished file must also decode to full length
            # before it replaces anything.
            decoded_samples = sf.info(os.fsencode(temp_path)).frames
        except (sf.LibsndfileError, _TagError, _WriteFailed) as error:
            system = _os_error_in(error)
            if system is not None:  # mutagen wraps the OSError of a full disk
                raise AudioError(describe_os_error(path, system)) from error
            raise AudioError(f"cannot write '{path}': {error}") from error
        if decoded_samples != total_samples:
            raise AudioError(
                f"cannot write '{path}': the encoded file holds {decoded_samples} samples "
                f"of {total_samples} (is the disk full?)"
            )


# --- captions and playlists ----------------------------------------------------------


def _vtt_text(text: str) -> str:
    """Cue text, escaped; blank lines would end the cue early, so they are dropped."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "\n".join(line.strip() for line in escaped.splitlines() if line.strip())


def write_captions(path: Path, captions: Sequence[Caption], sample_rate: int = SAMPLE_RATE) -> None:
    """A WebVTT file, so players can show the spoken words alongside the audio."""
    blocks = ["WEBVTT"]
    for caption in captions:
        start = _clock(_ms(caption.start_sample, sample_rate))
        end = _clock(_ms(caption.end_sample, sample_rate))
        blocks.append(f"{start} --> {end}\n{_vtt_text(caption.text)}")
    with atomic_path(path) as temp_path:
        temp_path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8", newline="\n")


def check_playlist_name(playlist: Path, file_name: str) -> None:
    """An M3U line ends at a line break, and percent-escaping one is read by some players
    and not others: such a name is refused, in one line, before anything is written."""
    if any(c in file_name for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"):
        raise UsageError(f"cannot write the playlist '{playlist}': the file name {file_name!r} "
                         "holds a line break, which an M3U playlist cannot hold; rename the "
                         "routine file")


def write_playlist(path: Path, entries: Sequence[tuple[str, str, float]]) -> None:
    """An extended M3U of (title, relative file name, duration in seconds) entries.

    UTF-8 always (name it .m3u8 for players that insist); a line break in a title or
    a file name would corrupt the list, so titles are flattened and names refused
    (UsageError).
    """
    lines = ["#EXTM3U"]
    for title, file_name, duration_seconds in entries:
        check_playlist_name(path, file_name)
        flat_title = " ".join(title.split())
        lines.append(f"#EXTINF:{math.floor(duration_seconds + 0.5)},{flat_title}")
        lines.append(file_name)
    with atomic_path(path) as temp_path:
        temp_path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
