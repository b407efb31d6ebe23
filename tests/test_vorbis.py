"""OGG by two libvorbis encoders joined into one logical stream (voicecoach/vorbis.py):
the same length, the same samples on each side of the join as each encoder's own file,
tones and chapters where they were, and a stream every reader takes whole."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import mutagen.oggvorbis
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests import tone_detect
from tests.test_faults import fill, small_disk  # noqa: F401, F811 (a fixture)
from tests.test_mp3 import chunked, session_like, silences_of
from voicecoach import SAMPLE_RATE, audiofile, tones, vorbis
from voicecoach.audiofile import Chapter, Seekable, write_audio
from voicecoach.errors import VoicecoachError
from voicecoach.export import _silences, write_session
from voicecoach.pipeline import prepare

SR = SAMPLE_RATE
MINUTE = 60 * SR


def encode(path: Path, signal: npt.NDArray[np.float32], channels: int = 1) -> None:
    """One libsndfile encoder at voicecoach's settings, as audiofile writes a half."""
    audiofile._write_sndfile(os.fsencode(path), path, "OGG", chunked(signal, 0, len(signal)),
                             total_samples=len(signal), sample_rate=SR, channels=channels,
                             progress=None)


def pages(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(flags, granule, serial, sequence, the page with its CRC field zeroed) of each page,
    each page's stored CRC checked against vorbis.crc."""
    found = []
    at = 0
    while at < len(data):
        capture, _, flags, granule, serial, sequence, stored, count = struct.unpack_from(
            "<4sBBqIIIB", data, at)
        assert capture == b"OggS"
        end = at + 27 + count + sum(data[at + 27: at + 27 + count])
        page = bytearray(data[at:end])
        page[22:26] = bytes(4)
        assert vorbis.crc(bytes(page)) == stored
        found.append((flags, granule, serial, sequence, bytes(page)))
        at = end
    return found


def decoded(path: Path) -> npt.NDArray[np.float32]:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SR
    return samples[:, 0]


def placed(samples: npt.NDArray[np.float32]) -> list[int]:
    """Where each of session_like's bursts best matches the burst itself, searched 20 ms
    either side of where it was written (a lossy onset can cross a threshold a sample
    apart in two encodings; the waveform's place cannot move)."""
    burst = session_like(2 * SR)[SR:SR + 3307]
    reach = 20 * SR // 1000
    found = []
    for start in range(SR, len(samples) - 3307, 10 * SR):
        window = samples[start - reach: start + reach + burst.size]
        found.append(start - reach + int(np.argmax(np.correlate(window, burst, mode="valid"))))
    return found


def test_the_page_checksum_is_ogg_s() -> None:
    """libsndfile's own pages carry the CRC vorbis.crc computes (pages() checks each)."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=SR, channels=1, format="OGG",
                      subtype="VORBIS") as f:
        f.write(session_like(20 * SR))
    assert len(pages(buffer.getvalue())) > 3


def test_the_cut_is_on_the_grid_in_a_long_silence_near_the_middle() -> None:
    total = 10 * MINUTE
    cut = vorbis.find_cut(total, [(0, 100), (5 * MINUTE - SR, 5 * MINUTE + SR)])
    assert cut is not None and cut % vorbis.CUT_GRID == 0 and abs(cut - total // 2) < SR
    # silence short of a guard on either side of a grid point: no cut
    assert vorbis.find_cut(total, [(5 * MINUTE, 5 * MINUTE + 2 * vorbis.GUARD)]) is None
    assert vorbis.find_cut(total, [(5 * MINUTE, 5 * MINUTE + 2 * vorbis.GUARD + 4096)]) is not None
    assert vorbis.find_cut(50 * SR, [(0, 50 * SR)]) is None  # parts of 25 s: one encoder


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("lead", [SR, SR + 77, SR + 300, SR + 1234])  # bridges of one short
# block, and (SR + 300) of none: measured
def test_the_join_gives_each_encoders_own_samples_on_its_side(tmp_path: Path, channels: int,
                                                            lead: int) -> None:
    """Bursts from `lead` on (so the first encoder's blocks fall differently at the cut):
    before X the joined file decodes to the first encoder's own file, from Y on to the
    second's, moved to its place in the session; zeros between; the exact length."""
    total = 2 * MINUTE + 12345
    signal = np.zeros(total, np.float32)
    signal[lead:] = session_like(total - lead)
    cut = vorbis.find_cut(total, silences_of(signal))
    assert cut is not None
    first, second = tmp_path / "first.ogg", tmp_path / "second.ogg"
    encode(first, signal[:cut], channels)
    encode(second, signal[cut:], channels)
    own_first, own_second = decoded(first), decoded(second)
    with first.open("r+b") as out:
        x, y = vorbis.join(out, second.read_bytes(), cut=cut, total_samples=total)
    assert cut - vorbis.GUARD <= x < y <= cut + vorbis.GUARD
    joined = decoded(first)
    assert len(joined) == total
    assert np.array_equal(joined[:x], own_first[:x])
    assert np.array_equal(joined[y:], own_second[y - cut:])
    assert not np.any(joined[x:y])
    # one logical stream: one serial, begun and ended once, pages in sequence, granules
    # rising to the session's length
    found = pages(first.read_bytes())
    assert {serial for _, _, serial, _, _ in found} == {found[0][2]}
    assert [flags & 2 for flags, *_ in found] == [2] + [0] * (len(found) - 1)
    assert [flags & 4 for flags, *_ in found] == [0] * (len(found) - 1) + [4]
    assert [sequence for _, _, _, sequence, _ in found] == list(range(len(found)))
    granules = [granule for _, granule, *_ in found if granule != -1]
    assert granules == sorted(granules) and granules[-1] == total


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Where each join vorbis.join made (so a test knows two encoders wrote its file)."""
    made: list[tuple[int, int]] = []
    join = vorbis.join

    def recorded(*args: object, **kwargs: int) -> tuple[int, int]:
        made.append(join(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(vorbis, "join", recorded)
    return made


@pytest.mark.parametrize("channels", [1, 2])
def test_two_encoders_write_what_one_does(tmp_path: Path, channels: int,
                                         joins: list[tuple[int, int]]) -> None:
    total = 2 * MINUTE + 12345  # off every grid
    signal = session_like(total)
    silences = silences_of(signal)
    assert vorbis.find_cut(total, silences) is not None
    split, single = tmp_path / "split.ogg", tmp_path / "single.ogg"
    chapters = [Chapter("One", 0, 61 * SR), Chapter("Two", 61 * SR, total)]
    write_audio(split, Seekable(lambda a, b: chunked(signal, a, b), silences),
                total_samples=total, channels=channels, chapters=chapters, title="T")
    write_audio(single, chunked(signal, 0, total), total_samples=total, channels=channels,
                chapters=chapters, title="T")
    assert len(joins) == 1  # the split file's, the other by one encoder
    one, two = decoded(single), decoded(split)
    assert len(two) == len(one) == total
    assert sf.info(split).frames == total
    assert round(mutagen.oggvorbis.OggVorbis(split).info.length * SR) == total
    assert placed(two) == placed(one) == list(range(SR, total - 3307, 10 * SR))

    def snr(samples: npt.NDArray[np.float32]) -> float:
        return float(10 * np.log10(np.sum(signal**2) / np.sum((samples - signal) ** 2)))

    assert snr(two) == pytest.approx(snr(one), abs=0.5)
    tags = mutagen.oggvorbis.OggVorbis(split).tags
    assert tags["TITLE"] == ["T"]
    assert (tags["CHAPTER001"], tags["CHAPTER002"]) == (["00:00:00.000"], ["00:01:01.000"])


@pytest.mark.skipif(shutil.which("oggdec") is None, reason="vorbis-tools not installed")
def test_libvorbisfile_decodes_the_joined_stream_whole(tmp_path: Path) -> None:
    """oggdec reads through libvorbisfile, not libsndfile: the same length."""
    total = 2 * MINUTE + 999
    signal = session_like(total)
    path = tmp_path / "split.ogg"
    write_audio(path, Seekable(lambda a, b: chunked(signal, a, b), silences_of(signal)),
                total_samples=total)
    subprocess.run(["oggdec", "-Q", "-o", str(tmp_path / "out.wav"), str(path)], check=True)
    assert sf.info(tmp_path / "out.wav").frames == total


def test_a_session_in_two_halves_keeps_every_tone_on_its_sample(
        tmp_path: Path, joins: list[tuple[int, int]]) -> None:
    """mid-back-knot (9 minutes): the OGG decodes to the WAV's length, every tone's
    waveform best matches at exactly its scheduled sample, and the chapters are on the
    WAV's milliseconds."""
    session = prepare("mid-back-knot")
    timeline = session.timeline
    assert vorbis.find_cut(timeline.duration_samples, _silences(timeline)) is not None
    path = tmp_path / "session.ogg"
    write_session(session, path)
    assert len(joins) == 1
    samples = decoded(path)
    assert len(samples) == timeline.duration_samples
    tone_events = [e for e in timeline.events if e.kind == "tone"]
    assert tone_events
    for event in tone_events:
        template = tones.generate(event.value)
        low = event.start - 20 * SR // 1000
        window = samples[low:event.start + 20 * SR // 1000 + template.size]
        found = low + int(np.argmax(np.correlate(window, template, mode="valid")))
        assert found == event.start, event
        assert tone_detect.identify(samples[event.start:event.start + SR]) == event.value
    tags = mutagen.oggvorbis.OggVorbis(path).tags
    for number, section in enumerate(timeline.sections, start=1):
        ms = (section.start * 1000 + SR // 2) // SR
        assert tags[f"CHAPTER{number:03d}"] == [audiofile._clock(ms)]


def test_a_stream_not_as_expected_is_refused_and_the_first_file_left_as_it_was(
        tmp_path: Path) -> None:
    total = 2 * MINUTE
    signal = session_like(total)
    cut = vorbis.find_cut(total, silences_of(signal))
    assert cut is not None
    first, second = tmp_path / "first.ogg", tmp_path / "second.ogg"
    encode(first, signal[:cut])
    encode(second, signal[cut:])
    before = first.read_bytes()
    other = tmp_path / "other.ogg"
    encode(other, signal[cut:], channels=2)  # other headers
    for wrong in (second.read_bytes()[:-100], other.read_bytes(), b"", b"OggS" + bytes(40)):
        with first.open("r+b") as out, pytest.raises(vorbis.CannotJoin):
            vorbis.join(out, wrong, cut=cut, total_samples=total)
        assert first.read_bytes() == before


def test_a_join_refused_is_encoded_again_by_one_encoder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another libvorbis might write its streams otherwise: the join refuses them, and the
    file is one encoder's, whole, each sample counted once by the progress display."""
    def refuse(*args: object, **kwargs: object) -> tuple[int, int]:
        raise vorbis.CannotJoin("the second Vorbis encoder made no silent block")

    monkeypatch.setattr(vorbis, "join", refuse)
    total = 2 * MINUTE + 12345
    signal = session_like(total)
    counted: list[int] = []
    path, single = tmp_path / "refused.ogg", tmp_path / "single.ogg"
    write_audio(path, Seekable(lambda a, b: chunked(signal, a, b), silences_of(signal)),
                total_samples=total, progress=counted.append)
    write_audio(single, chunked(signal, 0, total), total_samples=total)
    assert sum(counted) == total
    assert np.array_equal(decoded(path), decoded(single))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused.ogg", "single.ogg"]


def test_the_samples_around_a_cut_must_be_silent(tmp_path: Path) -> None:
    total = 2 * MINUTE
    signal = np.full(total, 0.1, np.float32)
    with pytest.raises(AssertionError, match="not silent"):
        write_audio(tmp_path / "x.ogg", Seekable(lambda a, b: chunked(signal, a, b),
                                                 [(0, total)]), total_samples=total)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_filling_up_under_two_encoders_says_so_and_leaves_nothing(
        small_disk: Path) -> None:  # noqa: F811
    total = 3 * MINUTE
    rng = np.random.default_rng(3)
    signal = (rng.standard_normal(total) * 0.3).astype(np.float32)
    signal[total // 2 - SR: total // 2 + SR] = 0  # the one silence, where the cut goes
    silences = [(total // 2 - SR, total // 2 + SR)]
    assert vorbis.find_cut(total, silences) is not None
    fill(small_disk, leave=200 * 1024)
    target = small_disk / "noise.ogg"
    with pytest.raises(VoicecoachError) as caught:
        write_audio(target, Seekable(lambda a, b: chunked(signal, a, b), silences),
                    total_samples=total)
    assert str(caught.value) == f"cannot write '{target}': no space left on device"
    assert os.listdir(small_disk) == ["filler"]
