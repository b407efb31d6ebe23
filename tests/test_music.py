"""Music under the voice (issue 17), on real encoded files made here: a chord progression
encoded to MP3 and OGG, exported under a session and measured in the exported file."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner

from tests.pulse import PulseServer
from voicecoach import SAMPLE_RATE
from voicecoach.cli import cli
from voicecoach.loudness import PEAK_CEILING_DBFS, TARGET_LUFS_MONO
from voicecoach.music import (
    DUCK_DEPTH_DB,
    DUCK_FALL_S,
    DUCK_RISE_S,
    FADE_IN_S,
    FADE_OUT_S,
    MusicBus,
    find_tracks,
)
from voicecoach.pipeline import Session, prepare
from voicecoach.render import SESSION_GAIN, Rendering
from voicecoach.spec import MusicSettings

SR = SAMPLE_RATE
SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
TRACK_RATE = 44100
TRACK_S = 6.0
CHORDS_HZ = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6),
             (196.0, 246.9, 293.7)]


def chord_progression(seconds: float = TRACK_S, rate: int = TRACK_RATE) -> np.ndarray:
    """Four chords, joined smoothly (20 ms), but cut hard at both ends (cosines: full
    amplitude at the first sample, and at the last): looped or crossfaded without care,
    it clicks."""
    t = np.arange(int(seconds * rate)) / rate
    per = seconds / len(CHORDS_HZ)
    out = np.zeros_like(t)
    edge = 0.02
    for i, chord in enumerate(CHORDS_HZ):
        rise = np.clip((t - i * per) / edge + 0.5, 0, 1) if i else np.ones_like(t)
        fall = np.clip(((i + 1) * per - t) / edge + 0.5, 0, 1) if i < 3 else np.ones_like(t)
        weight = np.sin(0.5 * np.pi * rise) * np.sin(0.5 * np.pi * fall)
        out += weight * sum(0.2 * np.cos(2 * np.pi * f * t) for f in chord)
    return np.stack([out, 0.9 * out], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chords.mp3, chords.ogg, and a folder of three tracks (and a cover image)."""
    folder = tmp_path_factory.mktemp("music")
    samples = chord_progression()
    soundfile.write(folder / "chords.mp3", samples, TRACK_RATE)
    soundfile.write(folder / "chords.ogg", samples, TRACK_RATE)
    album = folder / "album"
    album.mkdir()
    for name, rate in (("a.ogg", 48000), ("b.mp3", 44100), ("c.flac", 32000)):
        soundfile.write(album / name, chord_progression(4.0, rate)[:, :1] * 0.5, rate)
    (album / "cover.jpg").write_bytes(b"\xff\xd8 not sound")
    return folder


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def export(tmp_path: Path, *args: str, name: str = "out.wav") -> np.ndarray:
    out = tmp_path / name
    code, _, err = run("export", SHORT, "-o", str(out), *args)
    assert code == 0, err
    samples, rate = soundfile.read(out, dtype="float64")
    assert rate == SR
    return samples  # type: ignore[no-any-return]


def music_in(exported: np.ndarray, session: Session) -> np.ndarray:
    """The music in an exported file: the file less the voice and tones, at the session's
    gain (what is left besides the music is 16-bit rounding, below -90 dBFS)."""
    r = session.rendering
    voice = Rendering(session.timeline, r.speech, r.tones).mix(0, r.total_samples)
    return exported - voice.astype(np.float64) * r.gain


def db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x)) + 1e-20))


def test_music_falls_at_least_15_db_under_every_line_and_tone(tmp_path: Path, music: Path) -> None:
    track = str(music / "chords.ogg")
    exported = export(tmp_path, "--music", track)
    session = prepare(SHORT, music=MusicSettings(track))
    heard = music_in(exported, session)
    events = session.timeline.events
    fall, rise = round(DUCK_FALL_S * SR), round(DUCK_RISE_S * SR)
    # the gaps clear of every ramp, away from the session's fades
    edges = sorted([(0, 0)] + [(e.start, e.end) for e in events]
                   + [(len(heard), len(heard))])
    gaps = []
    reach = 0
    for start, end in edges:
        a, b = reach + rise, start - fall
        if b - a >= SR // 4 and a >= FADE_IN_S * SR and b <= len(heard) - FADE_OUT_S * SR:
            gaps.append((a, b))
        reach = max(reach, end)
    assert len(gaps) >= 5
    drops = []
    for event in events:
        if not FADE_IN_S * SR <= event.start <= len(heard) - FADE_OUT_S * SR:
            continue
        near = min(gaps, key=lambda g: min(abs(g[0] - event.end), abs(g[1] - event.start)))
        drops.append(db(heard[near[0]: near[1]]) - db(heard[event.start: event.end]))
    assert len(drops) >= 10
    assert min(drops) >= 15, drops
    # between two sounds closer than the ramps, the music stays down
    close = [(a.end, b.start) for a, b in zip(events, events[1:], strict=False)
             if 0 < b.start - a.end < fall + rise and a.start > FADE_IN_S * SR]
    assert close
    for a, b in close:
        assert db(heard[a:b]) < max(db(heard[g[0]: g[1]]) for g in gaps) - 15


def test_the_fall_ends_at_the_first_syllable_and_the_rise_starts_at_the_last(music: Path) -> None:
    """Down by the full depth from a sound's first sample to its last; the fall starts
    DUCK_FALL_S before it and the rise ends DUCK_RISE_S after; smooth ramps (no step
    steeper than a 100 ms raised cosine's)."""
    session = prepare(SHORT, music=MusicSettings(str(music / "chords.ogg")))
    bus = session.rendering.music
    assert bus is not None
    events = session.timeline.events
    fall, rise = round(DUCK_FALL_S * SR), round(DUCK_RISE_S * SR)
    isolated = [b for a, b, c in zip(events, events[1:], events[2:], strict=False)
                if min(b.start - a.end, c.start - b.end) > fall + rise + SR // 10]
    assert len(isolated) >= 3
    for e in isolated:
        lo = e.start - fall - SR // 10
        gain_db = 20 * np.log10(bus.duck_gain(lo, e.end + rise + SR // 10))
        at = {name: gain_db[t - lo] for name, t in (
            ("before", e.start - fall - 1), ("first", e.start), ("last", e.end - 1),
            ("rising", e.end + rise // 2), ("after", e.end + rise))}
        assert at["before"] == pytest.approx(0, abs=0.01)
        assert at["first"] == pytest.approx(-DUCK_DEPTH_DB)
        assert at["last"] == pytest.approx(-DUCK_DEPTH_DB)
        assert -DUCK_DEPTH_DB + 1 < at["rising"] < -1
        assert at["after"] == pytest.approx(0, abs=0.01)
        steepest = DUCK_DEPTH_DB * np.pi / 2 / (0.1 * SR)
        assert np.max(np.abs(np.diff(gain_db))) <= steepest


def click_score(x: np.ndarray, at: int, half: int) -> float:
    """The largest second difference around `at`: a step in the waveform (a click) shows
    there; smooth chords below 400 Hz barely register."""
    piece = x[max(0, at - half): at + half]
    return float(np.max(np.abs(np.diff(piece, 2))))


def test_no_clicks_at_loops_and_crossfades(music: Path) -> None:
    session = prepare(SHORT, music=MusicSettings(str(music / "chords.mp3")))
    bus = session.rendering.music
    assert bus is not None
    samples = bus.samples(0, bus.total_samples) / bus.gains[0]
    junctions = [s.start for s in bus.segments[1:]] + [s.end - s.fade_out for s in bus.segments]
    junctions += [s.end for s in bus.segments[:-1]]
    assert len(bus.segments) >= 5  # the 6 s track loops through the session
    half = SR // 20
    # the smooth inside of the track, ducked or not, scaled as the bus is
    ordinary = np.quantile([click_score(samples, at, half)
                            for at in range(SR, bus.total_samples - SR, SR // 7)], 0.95)
    worst = max(click_score(samples, at, half) for at in junctions if 0 < at < bus.total_samples)
    assert worst <= 1.5 * ordinary, (worst, ordinary)
    # and the score does see the hard cut a loop without a crossfade would make
    track = chord_progression()[:, 0]
    naive = np.concatenate([track, track])
    cut = track.shape[0]
    assert click_score(naive, cut, half) > 20 * click_score(naive, cut // 3, half)


def test_the_mix_keeps_the_voice_level_and_the_ceiling(tmp_path: Path, music: Path) -> None:
    """The voice keeps the session's constant gain under music (as loud as without it),
    the music sits at its level under it, and nothing passes the ceiling. The mix's
    gated loudness is the target with music as loud as the voice; quieter music lowers
    it (its stretches between lines count in BS.1770's gated mean), down to the voice's
    own once the music is far under it."""
    meter = pyloudnorm.Meter(SR)
    track = str(music / "chords.mp3")
    alone = meter.integrated_loudness(export(tmp_path, name="alone.wav"))
    for level in ("0", "-6", "-20"):
        exported = export(tmp_path, "--music", track, "--music-level", level)
        loudness = meter.integrated_loudness(exported)
        peak_db = 20 * np.log10(np.max(np.abs(exported)))
        session = prepare(SHORT, music=MusicSettings(track, float(level)))
        predicted, _ = session.rendering.loudness_and_peak()
        predicted += 20 * np.log10(session.rendering.gain)
        assert loudness == pytest.approx(predicted, abs=0.15)
        assert peak_db <= PEAK_CEILING_DBFS + 0.01
        assert session.rendering.gain == SESSION_GAIN  # a constant, under music too
        if level == "0":
            assert loudness == pytest.approx(TARGET_LUFS_MONO, abs=0.5)
        elif level == "-6":
            assert TARGET_LUFS_MONO - 2.5 < loudness < TARGET_LUFS_MONO
        else:
            assert loudness == pytest.approx(alone, abs=0.3)


def test_tones_and_voice_stay_as_audible_as_without_music(tmp_path: Path, music: Path) -> None:
    track = str(music / "chords.ogg")
    alone = export(tmp_path, name="alone.wav")
    exported = export(tmp_path, "--music", track)
    session = prepare(SHORT, music=MusicSettings(track))
    heard = music_in(exported, session)
    for event in session.timeline.events:
        sound = exported[event.start: event.end] - heard[event.start: event.end]
        assert db(sound) == pytest.approx(db(alone[event.start: event.end]), abs=0.5), event
        assert db(sound) - db(heard[event.start: event.end]) > 20, event


def test_same_inputs_same_bytes_and_pure_chunks(tmp_path: Path, music: Path) -> None:
    album = str(music / "album")
    first = tmp_path / "1.flac"
    second = tmp_path / "2.flac"
    for out in (first, second):
        code, _, err = run("export", SHORT, "--music", album, "--shuffle", "--seed", "7",
                           "-o", str(out))
        assert code == 0, err
    assert first.read_bytes() == second.read_bytes()
    session = prepare(SHORT, music=MusicSettings(album, shuffle=True, seed=7))
    whole = np.concatenate(list(session.rendering.chunks()))
    assert np.array_equal(np.concatenate(list(session.rendering.chunks(54321))), whole[54321:])


def test_a_folder_plays_in_name_order_or_shuffled_by_the_seed(music: Path) -> None:
    names = [Path(t.path).name for t in find_tracks(music / "album")]
    assert names == ["a.ogg", "b.mp3", "c.flac"]  # cover.jpg is not sound
    orders = {tuple(Path(t.path).name for t in find_tracks(music / "album", shuffle=True, seed=s))
              for s in range(10)}
    assert len(orders) > 1
    again = [Path(t.path).name for t in find_tracks(music / "album", shuffle=True, seed=3)]
    assert again == [Path(t.path).name for t in find_tracks(music / "album", shuffle=True, seed=3)]


def test_tracks_of_other_rates_sit_at_one_level(music: Path) -> None:
    session = prepare(SHORT, music=MusicSettings(str(music / "album")))
    bus = session.rendering.music
    assert bus is not None
    meter = pyloudnorm.Meter(SR)
    levels = []
    for t in range(3):
        samples = np.concatenate([bus._track_samples(t, a, a + SR)  # noqa: SLF001
                                  for a in range(0, bus._resampled[t].length, SR)])  # noqa: SLF001
        levels.append(meter.integrated_loudness(bus.gains[t] * samples.astype(np.float64)))
    assert max(levels) - min(levels) < 0.2, levels


def test_chapters_captions_and_phrase_cache_unchanged(tmp_path: Path, music: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The same chapters, captions and phrases with music as without; the cache's music/
    holds one small file for the track (its measurement), and nothing else changes."""
    import mutagen

    files = {}
    measurements = {}
    for label, extra in (("plain", ()), ("music", ("--music", str(music / "chords.mp3")))):
        cache = tmp_path / f"cache-{label}"
        monkeypatch.setenv("VOICECOACH_CACHE_DIR", str(cache))
        out = tmp_path / f"{label}.ogg"
        code, _, err = run("export", SHORT, "--captions", "-o", str(out), *extra)
        assert code == 0, err
        cached = sorted((p.relative_to(cache), p.stat().st_size) for p in cache.rglob("*")
                        if p.is_file() and p.relative_to(cache).parts[0] != "music")
        measurements[label] = [p.stat().st_size for p in cache.glob("music/*")]
        files[label] = (out.with_suffix(".vtt").read_bytes(), dict(mutagen.File(out).tags), cached)
    assert files["plain"] == files["music"]
    assert measurements["plain"] == [] and len(measurements["music"]) == 1
    assert measurements["music"][0] < 1000


def test_the_routine_names_its_music_and_no_music_leaves_it_out(tmp_path: Path,
                                                                music: Path) -> None:
    routine = tmp_path / "short.yaml"
    (tmp_path / "tunes").mkdir()
    soundfile.write(tmp_path / "tunes" / "loop.ogg", chord_progression(), TRACK_RATE)
    routine.write_text(Path(SHORT).read_text() + "music: tunes/loop.ogg\n")
    code, out, err = run("validate", str(routine))
    assert (code, out) == (0, f"{routine}: ok\n"), err
    for args, has_music in (((), True), (("--no-music",), False)):
        target = tmp_path / "r.wav"
        code, _, err = run("export", str(routine), "-o", str(target), *args)
        assert code == 0, err
        exported, _ = soundfile.read(target, dtype="float64")
        session = prepare(str(routine), music=MusicSettings(off=not has_music))
        assert (session.rendering.music is not None) == has_music
        assert (db(music_in(exported, session)[5 * SR: 10 * SR]) > -60) == has_music
    code, out, _ = run("schema")
    assert '"music"' in out


def sparse_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    """A WAV header for `seconds` of 8-bit mono, the data a hole in the file: an 8-hour
    file that takes no room on disk."""
    frames = int(seconds * rate)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8))
        f.write(b"data" + struct.pack("<I", frames))
        f.truncate(44 + frames)


def bad_music_cases(folder: Path) -> list[tuple[str, str]]:
    (folder / "empty").mkdir()
    (folder / "empty" / "notes.txt").write_text("not music")
    (folder / "text.mp3").write_text("this is not sound\n" * 100)
    soundfile.write(folder / "one-hertz.wav", np.zeros(10, np.float32), 1)
    sparse_wav(folder / "eight-hours.wav", 8 * 3600)
    soundfile.write(folder / "blip.wav", np.zeros(8000, np.float32), 8000)
    return [
        ("missing.mp3", "no such file or folder"),
        ("text.mp3", "not a sound file soundfile can read (WAV, FLAC, OGG, MP3...)"),
        ("empty", "the folder holds no sound files (names ending .wav, .flac, .ogg, .oga, "
                  ".mp3, .aif, .aiff, .opus)"),
        ("one-hertz.wav", "its sample rate is 1 Hz; expected 8000 to 192000 Hz"),
        ("eight-hours.wav", "it lasts 8:00:00; a track may last at most 3:00:00"),
        ("blip.wav", "it lasts 1.0 s; a track must last at least 2 s"),
    ]


def test_bad_music_is_refused_before_any_speech_is_made(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VOICECOACH_CACHE_DIR", str(cache))
    for name, reason in bad_music_cases(tmp_path):
        path = tmp_path / name
        for command in ("export", "play"):
            extra = ["-o", str(tmp_path / "x.wav")] if command == "export" else ["--no-log"]
            code, out, err = run(command, SHORT, "--music", str(path), *extra)
            assert (code, out, err) == (2, "", f"Error: --music '{path}': {reason}\n")
        assert not (tmp_path / "x.wav").exists()
        assert not list(cache.glob("phrases/*"))  # nothing was synthesized
        routine = tmp_path / "r.yaml"
        routine.write_text(f"title: T\nmusic: {name}\nsteps:\n  - name: A\n    hold: 2\n")
        code, _, err = run("validate", str(routine))
        assert (code, err) == (2, f"{routine}:2:8: music: '{path}': {reason}\n")


def test_music_options_out_of_range_are_usage_errors(music: Path) -> None:
    code, _, err = run("export", SHORT, "--music-level", "5")
    assert code == 2 and "--music-level" in err and "-30" in err
    code, _, err = run("export", SHORT, "--music", str(music / "chords.mp3"), "--no-music")
    assert (code, err.splitlines()[-1]) == (2, "Error: --music and --no-music do not go together")


@pytest.mark.sound
def test_play_is_the_export_with_music(pulse_server: PulseServer, tmp_path: Path,
                                       music: Path) -> None:
    track = str(music / "chords.mp3")
    reference = export(tmp_path, "--music", track).astype(np.float32)
    recording = pulse_server.record()
    launched = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "voicecoach", "play", SHORT, "--no-log",
                             "--music", track], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120, env={**os.environ})
    time.sleep(0.3)
    recorded = recording.stop()
    assert result.returncode == 0, result.stderr
    # the session's sample 0 in the recording: found from its first second, music and all
    piece = reference[SR // 2: 3 * SR // 2]
    lo = int(recording.seconds_since_start(launched) * SR)
    scores = np.correlate(recorded[lo: lo + 10 * SR], piece, mode="valid")
    lag = lo + int(np.argmax(scores)) - SR // 2
    search = SR // 50  # the device's clock may wander by up to 20 ms (as in test_play.py)
    offsets, corrs = [], []
    # every second up to the fade-out, the gaps' music included
    for at in range(SR, reference.shape[0] - int(FADE_OUT_S * SR), SR):
        a = reference[at: at + SR // 2]
        window = recorded[lag + at - search: lag + at + search + a.size]
        shift = int(np.argmax(np.correlate(window, a, mode="valid"))) - search
        b = recorded[lag + at + shift: lag + at + shift + a.size]
        offsets.append(shift)
        corrs.append(float(np.corrcoef(a, b)[0, 1]))
        level = db(b.astype(np.float64)) - db(a.astype(np.float64))
        assert abs(level) < 0.1, (at / SR, shift, level)
    assert max(offsets) - min(offsets) <= search, offsets
    # the sound server resamples: a sub-sample shift costs speech a little, music nothing
    assert min(corrs) > 0.92 and np.median(corrs) > 0.99, corrs
    assert pulse_server.sink_inputs() == []


def test_a_long_session_holds_a_few_files_and_blocks(tmp_path: Path) -> None:
    """Tracks are read in blocks, and only the last few tracks' files stay open: what the
    bus holds stays bounded however long it plays and however many tracks it has."""
    from voicecoach import music as music_module

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        name = folder / f"{i:02d}.{'mp3' if i % 3 == 0 else 'flac'}"
        rate = 22050 if i % 2 else 44100
        soundfile.write(name, chord_progression(2.5, rate), rate)
    session = prepare(SHORT, music=MusicSettings(str(folder)))
    bus = session.rendering.music
    assert isinstance(bus, MusicBus)
    assert len({s.track for s in bus.segments}) == 12
    most_open = 0
    for a in range(0, bus.total_samples, SR):
        bus.samples(a, a + SR)
        readers = [r._decoder for r in bus._resampled]  # noqa: SLF001
        most_open = max(most_open, sum(d._source is not None for d in readers))  # noqa: SLF001
    assert most_open <= music_module.OPEN_TRACKS
    held = sum(b.shape[0] for b in bus._cache.values())  # noqa: SLF001
    assert held <= music_module.CACHE_SAMPLES


def test_a_track_gone_after_its_check_is_one_error(tmp_path: Path, music: Path) -> None:
    from voicecoach.errors import AudioError

    track = tmp_path / "gone.ogg"
    track.write_bytes((music / "chords.ogg").read_bytes())
    session = prepare(SHORT, music=MusicSettings(str(track)))  # measured as it is laid
    track.unlink()
    with pytest.raises(AudioError, match=f"^cannot decode music '{track}': "):
        list(session.rendering.chunks())
    track.write_bytes((music / "chords.ogg").read_bytes())  # and gone before it is measured
    bus = MusicBus(find_tracks(track), SR)
    track.unlink()
    with pytest.raises(AudioError, match=f"^cannot decode music '{track}': "):
        bus.gain(0)


@pytest.mark.parametrize("name", ["chords.ogg", "chords.mp3"])
def test_blocks_resample_as_the_whole_track_would(music: Path, name: str) -> None:
    """Fixed blocks with a margin of context: the same samples, within 1e-5, as soxr over
    the whole track at once, and the decoder's blocks the same as one whole read."""
    import miniaudio
    import soxr

    from voicecoach.music import _Resampled

    track = find_tracks(music / name)[0]
    if track.mp3:
        whole = np.asarray(miniaudio.decode_file(
            str(music / name), miniaudio.SampleFormat.FLOAT32, 1, TRACK_RATE).samples,
            dtype=np.float32)
    else:
        whole = soundfile.read(music / name, dtype="float32")[0].mean(axis=1)
    resampled = _Resampled(track, SR)
    blocks = np.concatenate([resampled.block(k) for k in range(-(-resampled.length
                                                                   // resampled.block_out))])
    reference = soxr.resample(whole[: track.frames], TRACK_RATE, SR, quality="HQ")
    n = min(reference.shape[0], resampled.length) - SR // 10  # the last samples see the end
    assert np.max(np.abs(blocks[:n] - reference[:n])) < 1e-5


def test_two_readers_at_once_get_what_one_gets(music: Path) -> None:
    """An MP3 is made by two encoders at once, each reading its half of the session: the
    bus's decoders and block cache are shared, so reading them from two threads at once
    raised 'generator already executing' or mixed up blocks."""
    from concurrent.futures import ThreadPoolExecutor

    def session() -> Session:
        return prepare(SHORT, music=MusicSettings(str(music / "album")))

    step = 4096
    serial = session().rendering
    total = serial.total_samples
    expected = [serial.mix(a, min(a + step, total)) for a in range(0, total, step)]
    shared = session().rendering
    halves = [range(0, total // 2, step), range(total // 2 // step * step, total, step)]
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda r: [(a, shared.mix(a, min(a + step, total))) for a in r],
                              halves))
    got = dict(item for part in parts for item in part)
    assert all(np.array_equal(got[a], expected[a // step]) for a in range(0, total, step))


def test_an_mp3_with_music_is_whole(tmp_path: Path, music: Path) -> None:
    """The README's example: a routine long enough for the two-encoder MP3 (cut at a
    silence, mp3.py), with a folder of music, which leaves no silence to cut at: one
    encoder makes it (the cut's check refused it with a traceback), as long as the WAV."""
    album = str(music / "album")
    for name in ("u.mp3", "u.wav"):
        code, _, err = run("export", "upper-back-knot", "--music", album, "-o",
                           str(tmp_path / name))
        assert code == 0, err
    assert soundfile.info(tmp_path / "u.mp3").frames == soundfile.info(tmp_path / "u.wav").frames
