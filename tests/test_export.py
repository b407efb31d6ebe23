"""Export: what lands on disk decodes back to the samples, times and tags we wrote."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import mutagen
import mutagen.id3
import mutagen.mp3
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from voicecoach import SAMPLE_RATE, audiofile
from voicecoach.audiofile import (
    FORMATS,
    Caption,
    Chapter,
    format_for,
    write_audio,
    write_captions,
    write_playlist,
)
from voicecoach.errors import UsageError, VoicecoachError
from voicecoach.files import atomic_path

ALL_EXTENSIONS = [".wav", ".flac", ".ogg", ".mp3"]
LOSSLESS = {".wav", ".flac"}
ONE_MS_SAMPLES = SAMPLE_RATE // 1000  # 22 samples: the onset tolerance
QUANTUM = 1 / 32768  # one 16-bit step

# Measured with libsndfile 1.2.2: every format decodes to exactly total_samples. Vorbis
# stores the end in its granule positions; for MP3, libsndfile's LAME writes a Xing/LAME
# header with encoder delay and padding and its mpg123 decoder trims both. So the
# tolerance is zero for all four, lossy included.
LENGTH_TOLERANCE_SAMPLES = {".wav": 0, ".flac": 0, ".ogg": 0, ".mp3": 0}

BURST_STARTS = [2205, 20000, 41111, 60000]
BURST_SAMPLES = 3307  # 150 ms
BURST_AMPLITUDE = 0.5
TOTAL_SAMPLES = 3 * SAMPLE_RATE  # 66150
CHUNK_SIZES = [1000, 4410, 777, 8192, 1]  # uneven, so bursts straddle chunk edges
CHAPTERS = [
    Chapter("Warm up", 0, 20000),
    Chapter("Stretch, left side — kneeling", 20000, 41111),
    Chapter("Rest", 41111, TOTAL_SAMPLES),
]

Signal = npt.NDArray[np.float32]


def bursts() -> Signal:
    """1 kHz bursts with hard onsets in silence: the strictest case for alignment."""
    signal = np.zeros(TOTAL_SAMPLES, dtype=np.float32)
    phase = 2 * np.pi * 1000 * np.arange(BURST_SAMPLES) / SAMPLE_RATE
    for start in BURST_STARTS:
        signal[start : start + BURST_SAMPLES] = BURST_AMPLITUDE * np.sin(phase)
    return signal


def in_chunks(signal: Signal) -> Iterator[Signal]:
    """Feed a signal as the renderer would: one small chunk at a time."""
    position = 0
    index = 0
    while position < len(signal):
        size = CHUNK_SIZES[index % len(CHUNK_SIZES)]
        yield signal[position : position + size]
        position += size
        index += 1


def onsets(samples: npt.NDArray[np.floating]) -> list[int]:
    """Sample indices where the envelope first exceeds half the burst level after silence."""
    loud = np.flatnonzero(np.abs(samples) > BURST_AMPLITUDE / 2)
    if len(loud) == 0:
        return []
    starts = [int(loud[0])]
    for previous, current in itertools.pairwise(loud):
        if current - previous > 10 * ONE_MS_SAMPLES:
            starts.append(int(current))
    return starts


def write_bursts(path: Path, channels: int = 1) -> Signal:
    signal = bursts()
    write_audio(
        path,
        in_chunks(signal),
        total_samples=TOTAL_SAMPLES,
        channels=channels,
        title="Back knots",
        chapters=CHAPTERS,
    )
    return signal


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --- audio round trips ------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("extension", ALL_EXTENSIONS)
def test_round_trip(tmp_path: Path, extension: str, channels: int) -> None:
    path = tmp_path / f"session{extension}"
    signal = write_bursts(path, channels)

    decoded, sample_rate = sf.read(path, dtype="float32", always_2d=True)

    assert sample_rate == SAMPLE_RATE
    assert decoded.shape[1] == channels
    assert abs(len(decoded) - TOTAL_SAMPLES) <= LENGTH_TOLERANCE_SAMPLES[extension]
    np.testing.assert_array_equal(decoded[:, 0], decoded[:, -1])
    mono = decoded[:, 0]
    # each burst where it was written, fed in uneven chunks that split bursts (the onset
    # is where the 1 kHz sine first passes half its level, 2 samples after it starts)
    found = onsets(mono)
    assert len(found) == len(BURST_STARTS)
    for decoded_onset, written_at in zip(found, BURST_STARTS, strict=True):
        assert abs(decoded_onset - 2 - written_at) <= (0 if extension in LOSSLESS
                                                       else ONE_MS_SAMPLES)
    if extension in LOSSLESS:
        np.testing.assert_allclose(mono, signal, rtol=0, atol=QUANTUM * 1.001)
    else:
        # A shift of even one sample costs a 1 kHz tone far more than 20 dB of SNR, so
        # this also pins the alignment well inside the 1 ms onset check.
        error = mono[:TOTAL_SAMPLES] - signal
        snr_db = 10 * np.log10(np.sum(signal**2) / np.sum(error**2))
        assert snr_db > 20


@pytest.mark.parametrize("total_samples", [1, 575, 577, 22051])
@pytest.mark.parametrize("extension", [".ogg", ".mp3"])
def test_lossy_length_is_exact_for_awkward_lengths(
    tmp_path: Path, extension: str, total_samples: int
) -> None:
    """MP3 frames are 576 samples at 22050 Hz; lengths off the grid must survive too."""
    path = tmp_path / f"short{extension}"
    signal = np.full(total_samples, 0.1, dtype=np.float32)
    write_audio(path, [signal], total_samples=total_samples)
    assert sf.info(path).frames == total_samples
    assert len(sf.read(path)[0]) == total_samples


def test_mp3_has_gapless_header_other_decoders_can_use(tmp_path: Path) -> None:
    """mutagen reads the LAME header independently of libsndfile and agrees on length."""
    path = tmp_path / "session.mp3"
    write_bursts(path)
    info = mutagen.mp3.MP3(path).info
    assert info.bitrate_mode == mutagen.mp3.BitrateMode.VBR
    assert info.encoder_info.startswith("LAME")
    assert round(info.length * SAMPLE_RATE) == TOTAL_SAMPLES


# --- tags and chapters ------------------------------------------------------------------


def test_mp3_chapters_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "session.mp3"
    write_bursts(path)
    tags = mutagen.id3.ID3(path)

    assert tags.version == (2, 4, 0)
    assert tags["TIT2"].text == ["Back knots"]
    assert tags["TPE1"].text == ["voicecoach"]
    toc = tags.getall("CTOC")
    assert len(toc) == 1
    assert toc[0].flags == mutagen.id3.CTOCFlags.TOP_LEVEL | mutagen.id3.CTOCFlags.ORDERED
    assert toc[0].child_element_ids == ["ch0", "ch1", "ch2"]
    chapters = {frame.element_id: frame for frame in tags.getall("CHAP")}
    assert sorted(chapters) == ["ch0", "ch1", "ch2"]
    expected_ms = [(0, 907), (907, 1864), (1864, 3000)]  # 20000 samples = 907.03 ms
    for index, (chapter, (start_ms, end_ms)) in enumerate(zip(CHAPTERS, expected_ms, strict=True)):
        frame = chapters[f"ch{index}"]
        assert (frame.start_time, frame.end_time) == (start_ms, end_ms)
        assert frame.sub_frames["TIT2"].text == [chapter.title]


@pytest.mark.parametrize("extension", [".ogg", ".flac"])
def test_vorbis_comment_chapters_and_tags(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"session{extension}"
    write_bursts(path)
    audio = mutagen.File(path)
    assert audio is not None
    tags = audio.tags

    assert tags["TITLE"] == ["Back knots"]
    assert tags["ARTIST"] == ["voicecoach"]
    assert tags["CHAPTER001"] == ["00:00:00.000"]
    assert tags["CHAPTER001NAME"] == ["Warm up"]
    assert tags["CHAPTER002"] == ["00:00:00.907"]
    assert tags["CHAPTER002NAME"] == ["Stretch, left side — kneeling"]
    assert tags["CHAPTER003"] == ["00:00:01.864"]
    assert tags["CHAPTER003NAME"] == ["Rest"]
    assert "CHAPTER004" not in tags


def test_vorbis_chapter_clock_past_an_hour(tmp_path: Path) -> None:
    total_samples = SAMPLE_RATE * 3723 + 1  # 1 h 2 min 3 s, as silence in one-second chunks
    start = SAMPLE_RATE * 3723 - SAMPLE_RATE // 2
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    chunks = [silence] * 3723 + [silence[:1]]
    path = tmp_path / "long.flac"
    write_audio(path, chunks, total_samples=total_samples, chapters=[Chapter("End", start, start)])
    assert mutagen.File(path).tags["CHAPTER001"] == ["01:02:02.500"]


def test_wav_gets_title_and_artist(tmp_path: Path) -> None:
    path = tmp_path / "session.wav"
    write_bursts(path)
    with sf.SoundFile(path) as sound_file:
        assert sound_file.title == "Back knots"
        assert sound_file.artist == "voicecoach"


# --- formats and errors -----------------------------------------------------------------


def test_formats_by_extension_any_case() -> None:
    assert sorted(FORMATS) == sorted(ALL_EXTENSIONS)
    assert format_for(Path("a.WAV")) == "WAV"
    assert format_for(Path("dir.x/a.Mp3")) == "MP3"
    assert [format_for(Path(f"a{e}")) for e in ALL_EXTENSIONS] == ["WAV", "FLAC", "OGG", "MP3"]


def test_unknown_extension_message(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        write_audio(tmp_path / "x.aac", [np.zeros(10, np.float32)], total_samples=10)
    assert str(caught.value) == (
        f"cannot export to '{tmp_path / 'x.aac'}': unknown extension '.aac' "
        "(use .wav, .flac, .ogg or .mp3)"
    )
    assert str(format_error(Path("x.aac"))) == (
        "cannot export to 'x.aac': unknown extension '.aac' (use .wav, .flac, .ogg or .mp3)"
    )
    assert str(format_error(Path("session"))) == (
        "cannot export to 'session': no extension (use .wav, .flac, .ogg or .mp3)"
    )
    assert listing(tmp_path) == []


def format_error(path: Path) -> UsageError:
    with pytest.raises(UsageError) as caught:
        format_for(path)
    return caught.value


def write_error(path: Path) -> VoicecoachError:
    with pytest.raises(VoicecoachError) as caught:
        write_audio(path, [np.zeros(10, np.float32)], total_samples=10)
    return caught.value


def test_missing_directory_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert str(write_error(Path("dir/x.wav"))) == (
        "cannot write 'dir/x.wav': directory 'dir' does not exist"
    )
    assert listing(tmp_path) == []


def test_parent_is_a_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("hi")
    assert str(write_error(Path("notes.txt/x.mp3"))) == (
        "cannot write 'notes.txt/x.mp3': 'notes.txt' is not a directory"
    )


def test_target_is_a_directory_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("out.ogg").mkdir()
    assert str(write_error(Path("out.ogg"))) == "cannot write 'out.ogg': it is a directory"
    assert listing(tmp_path) == ["out.ogg"]


WRITE_ONE = """
import sys
from pathlib import Path
import numpy as np
from voicecoach.errors import VoicecoachError
from voicecoach.export import write_audio
try:
    write_audio(Path(sys.argv[1]), [np.zeros(10, np.float32)], total_samples=10)
except VoicecoachError as e:
    print(e)
"""


def _without_root_powers() -> None:
    """In the child: root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from
    the bounding set before exec, so the new program never has them) meets permissions
    like anyone: its own 0o555 folder refuses new files."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop CAP_DAC_OVERRIDE")


def test_permission_denied_message(tmp_path: Path) -> None:
    """Written by a process that permissions bind, root included (the tests run as root)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    path = locked / "x.wav"
    try:
        result = subprocess.run([sys.executable, "-c", WRITE_ONE, str(path)], capture_output=True,
                                text=True, timeout=60,
                                preexec_fn=_without_root_powers if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as e:  # the bounding set cannot be changed here
        pytest.skip(f"cannot run a process that permissions bind: {e}")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"cannot write '{path}': permission denied\n"
    assert listing(locked) == []


# --- atomicity --------------------------------------------------------------------------


def failing_chunks(exception: BaseException) -> Iterator[Signal]:
    signal = bursts()
    for index, chunk in enumerate(in_chunks(signal)):
        if index == 10:
            raise exception
        yield chunk


@pytest.mark.parametrize("exception_type", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("extension", ALL_EXTENSIONS)
def test_failure_midway_leaves_no_file(
    tmp_path: Path, extension: str, exception_type: type[BaseException]
) -> None:
    path = tmp_path / f"session{extension}"
    with pytest.raises(exception_type):
        write_audio(path, failing_chunks(exception_type()), total_samples=TOTAL_SAMPLES)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("exception_type", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("extension", [".wav", ".mp3"])
def test_failure_midway_keeps_existing_target(
    tmp_path: Path, extension: str, exception_type: type[BaseException]
) -> None:
    path = tmp_path / f"session{extension}"
    path.write_bytes(b"last week's session")
    with pytest.raises(exception_type):
        write_audio(path, failing_chunks(exception_type()), total_samples=TOTAL_SAMPLES)
    assert listing(tmp_path) == [path.name]
    assert path.read_bytes() == b"last week's session"


def test_failure_while_tagging_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags go on the temporary file, so a tagging failure never reaches the target."""

    def broken_tagger(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(audiofile, "_tag_mp3", broken_tagger)
    path = tmp_path / "session.mp3"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        write_bursts(path)
    assert listing(tmp_path) == [path.name]
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("sample_counts", [[100, 100], [100, 300]])
def test_wrong_sample_count_is_refused_and_leaves_nothing(
    tmp_path: Path, sample_counts: list[int]
) -> None:
    chunks = [np.zeros(n, np.float32) for n in sample_counts]
    with pytest.raises(ValueError):
        write_audio(tmp_path / "x.flac", chunks, total_samples=300)
    assert listing(tmp_path) == []


def test_chapter_outside_the_audio_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_audio(
            tmp_path / "x.wav",
            [np.zeros(100, np.float32)],
            total_samples=100,
            chapters=[Chapter("Too long", 0, 101)],
        )
    assert listing(tmp_path) == []


def test_overwrite_replaces_target_with_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "session.wav"
    path.write_bytes(b"old")
    write_bursts(path)
    assert listing(tmp_path) == [path.name]
    assert sf.info(path).frames == TOTAL_SAMPLES
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_names_its_temporary_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as temp_path:
        assert temp_path.parent == tmp_path
        assert re.fullmatch(r"\.notes\.txt\.vc-[0-9a-f]{8}\.part", temp_path.name)
        temp_path.write_text("half")
        raise RuntimeError
    assert listing(tmp_path) == []
    with atomic_path(target) as temp_path:
        temp_path.write_text("whole")
    assert listing(tmp_path) == ["notes.txt"]
    assert target.read_text() == "whole"


def test_the_finished_file_is_renamed_into_place(tmp_path: Path) -> None:
    """Atomic because it is a rename: the file at the path afterwards is the very file that
    was written (its inode), and a reader that had the old file open still reads it
    whole. A copy into the target would rewrite the old file under that reader."""
    target = tmp_path / "notes.txt"
    target.write_text("last week's notes")
    reader = target.open()
    with atomic_path(target) as temp_path:
        temp_path.write_text("this week's notes")
        written = os.stat(temp_path).st_ino
        assert target.read_text() == "last week's notes"  # untouched until the rename
    assert os.stat(target).st_ino == written
    assert target.read_text() == "this week's notes"
    assert reader.read() == "last week's notes"
    reader.close()
    assert listing(tmp_path) == ["notes.txt"]


def test_a_file_behind_a_symlink_is_renamed_into_place(tmp_path: Path) -> None:
    """Through a link too: a new file takes the place of the one the link names."""
    real = tmp_path / "real.wav"
    real.write_bytes(b"old")
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    old = os.stat(real).st_ino
    with real.open("rb") as reader:
        write_bursts(link)
        assert reader.read() == b"old"
    assert os.stat(real).st_ino != old and link.is_symlink()
    assert sf.info(link).frames == TOTAL_SAMPLES
    assert listing(tmp_path) == ["link.wav", "real.wav"]


# --- progress and memory ----------------------------------------------------------------


def test_progress_reports_each_chunk(tmp_path: Path) -> None:
    reports: list[int] = []
    write_audio(
        tmp_path / "x.ogg",
        in_chunks(bursts()),
        total_samples=TOTAL_SAMPLES,
        progress=reports.append,
    )
    assert sum(reports) == TOTAL_SAMPLES
    assert reports[:5] == CHUNK_SIZES


@pytest.mark.parametrize("extension", ALL_EXTENSIONS)
def test_twenty_minutes_stream_in_flat_memory(tmp_path: Path, extension: str) -> None:
    total_samples = 20 * 60 * SAMPLE_RATE
    whole_signal_bytes = total_samples * 4

    def one_second_chunks() -> Iterator[Signal]:
        for start in range(0, total_samples, SAMPLE_RATE):
            time_s = np.arange(start, start + SAMPLE_RATE) / SAMPLE_RATE
            yield (0.3 * np.sin(2 * np.pi * 440 * time_s)).astype(np.float32)

    chapters = [
        Chapter(f"Step {i}", i * SAMPLE_RATE * 60, (i + 1) * SAMPLE_RATE * 60) for i in range(20)
    ]
    path = tmp_path / f"long{extension}"
    tracemalloc.start()
    try:
        write_audio(path, one_second_chunks(), total_samples=total_samples, chapters=chapters)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < whole_signal_bytes / 20  # measured about 0.5-2.2 MB of 106 MB
    assert sf.info(path).frames == total_samples


# --- captions and playlists -------------------------------------------------------------


def parse_vtt(text: str) -> list[tuple[str, str, str]]:
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        timing, cue_text = block.split("\n", 1)
        start, arrow, end = timing.split(" ")
        assert arrow == "-->"
        cues.append((start, end, cue_text))
    return cues


def test_captions_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "session.vtt"
    captions = [
        Caption("Kneel on the mat.", 0, 33075),
        Caption("Hold for <twenty> seconds & breathe -->", 33075, 3723 * SAMPLE_RATE + 11025),
        Caption("Switch sides.\n\nSlowly.", 3723 * SAMPLE_RATE + 11025, 3724 * SAMPLE_RATE),
    ]
    write_captions(path, captions)
    assert parse_vtt(path.read_text(encoding="utf-8")) == [
        ("00:00:00.000", "00:00:01.500", "Kneel on the mat."),
        ("00:00:01.500", "01:02:03.500", "Hold for &lt;twenty&gt; seconds &amp; breathe --&gt;"),
        ("01:02:03.500", "01:02:04.000", "Switch sides.\nSlowly."),
    ]
    assert listing(tmp_path) == ["session.vtt"]


def test_empty_captions_file_is_just_the_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.vtt"
    write_captions(path, [])
    assert path.read_text(encoding="utf-8") == "WEBVTT\n"


def test_playlist_content(tmp_path: Path) -> None:
    path = tmp_path / "week.m3u8"
    write_playlist(
        path,
        [
            ("Back knots — kneeling", "back-knots-kneeling.mp3", 612.4),
            ("Against a wall", "wall.mp3", 90.5),
            ("Two\nlines", "two.mp3", 0.49),
        ],
    )
    assert path.read_bytes().decode("utf-8") == (
        "#EXTM3U\n"
        "#EXTINF:612,Back knots — kneeling\n"
        "back-knots-kneeling.mp3\n"
        "#EXTINF:91,Against a wall\n"
        "wall.mp3\n"
        "#EXTINF:0,Two lines\n"
        "two.mp3\n"
    )
    assert listing(tmp_path) == ["week.m3u8"]


def test_playlist_refuses_line_break_in_file_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        write_playlist(tmp_path / "x.m3u", [("t", "a\nb.mp3", 1.0)])
    assert str(caught.value) == (
        f"cannot write the playlist '{tmp_path / 'x.m3u'}': the file name 'a\\nb.mp3' holds a "
        "line break, which an M3U playlist cannot hold; rename the routine file")
    assert listing(tmp_path) == []
