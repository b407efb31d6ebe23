"""Speech: the real espeak-ng voice, its options, the phrase cache, and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from voicecoach import SAMPLE_RATE
from voicecoach.cli import cli
from voicecoach.pipeline import phrase_cache
from voicecoach.spec import VoiceSettings
from voicecoach.speech import Espeak

SR = SAMPLE_RATE
VOICECOACH = [sys.executable, "-m", "voicecoach"]
SHORT = str(Path(__file__).parent / "cases" / "short.yaml")


def test_voices_lists_the_installed_ones() -> None:
    result = CliRunner().invoke(cli, ["voices"])
    assert result.exit_code == 0
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert "gmw/en" in ids and "gmw/en-US" in ids and len(ids) > 50


def test_unknown_voice_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["show", SHORT, "--voice", "vulcan"])
    assert result.exit_code == 2
    assert result.stderr == "Error: unknown voice 'vulcan': `voicecoach voices` lists them\n"


def test_rate_and_voice_change_the_speech_and_the_cache_key() -> None:
    text = "Hold for twenty five seconds, breathing slowly."
    slow = Espeak(rate_wpm=120).synthesize(text)
    fast = Espeak(rate_wpm=240).synthesize(text)
    assert slow.shape[0] > 1.6 * fast.shape[0]
    us = Espeak(voice="gmw/en-US").synthesize(text)
    assert us.shape[0] != Espeak().synthesize(text).shape[0] or not np.array_equal(us, Espeak().synthesize(text))
    keys = {phrase_cache(v).path(text) for v in (VoiceSettings(), VoiceSettings(rate_wpm=200),
                                                   VoiceSettings(voice="gmw/en-US"), VoiceSettings(volume=0.5))}
    assert len(keys) == 4


def test_volume_sets_the_voice_against_the_tones() -> None:
    loud = Espeak(volume=1.0).synthesize("Switch sides.")
    soft = Espeak(volume=0.5).synthesize("Switch sides.")
    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    assert rms(soft) == pytest.approx(0.5 * rms(loud), rel=0.05)


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.Popen([*VOICECOACH, "export", SHORT, "-o", str(tmp_path / f"{i}.wav")], env=env,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    a, _ = soundfile.read(tmp_path / "0.wav")
    b, _ = soundfile.read(tmp_path / "1.wav")
    assert np.array_equal(a, b)
    phrases = list((tmp_path / "cache" / "phrases").rglob("*"))
    assert not [p for p in phrases if p.name.startswith(".part-")]
    # a third export finds every phrase and synthesizes nothing
    code = ("from voicecoach.pipeline import prepare, phrase_cache; c = phrase_cache(); "
            f"prepare({SHORT!r}, cache=c); print(c.synthesized)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_no_tts_engine_says_what_to_install(tmp_path: Path) -> None:
    """espeak-ng missing: the library fails to load, as on a machine without it. The
    engine's helper process loads pyttsx3's binding from where this process finds
    pyttsx3, so a pyttsx3 first on the path, whose binding cannot load libespeak-ng,
    stands in for it."""
    import pyttsx3

    real = Path(pyttsx3.__file__).parent / "drivers" / "_espeak.py"
    (tmp_path / "pyttsx3" / "drivers").mkdir(parents=True)
    (tmp_path / "pyttsx3" / "__init__.py").write_text("")
    (tmp_path / "pyttsx3" / "drivers" / "_espeak.py").write_text(textwrap.dedent(f"""
        import ctypes
        _load = ctypes.cdll.LoadLibrary
        def _no_espeak(name, *a, **k):
            if "espeak" in str(name):
                raise OSError(f"{{name}}: cannot open shared object file")
            return _load(name, *a, **k)
        ctypes.cdll.LoadLibrary = _no_espeak
        exec(compile(open({str(real)!r}).read(), {str(real)!r}, "exec"))  # the real binding
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VOICECOACH_CACHE_DIR": str(tmp_path / "empty-cache")}
    result = subprocess.run([*VOICECOACH, "export", SHORT, "-o", str(tmp_path / "x.wav")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("Error: no text-to-speech engine: install espeak-ng "
                             "(on Debian: apt-get install espeak-ng)\n")
    assert not (tmp_path / "x.wav").exists()


def test_a_routine_can_bring_its_own_sounds(tmp_path: Path) -> None:
    t = np.arange(int(0.3 * SR)) / SR
    chirp = (0.3 * np.sin(2 * np.pi * (300 + 2000 * t) * t) * np.hanning(t.size)).astype(np.float32)
    soundfile.write(tmp_path / "mine.wav", chirp, SR)
    routine = tmp_path / "own.yaml"
    routine.write_text("title: Own\nsounds:\n  hold_start: mine.wav\nsteps:\n  - name: A\n    hold: 3\n")
    out = tmp_path / "own.wav"
    result = CliRunner().invoke(cli, ["export", str(routine), "-o", str(out)])
    assert result.exit_code == 0, result.output
    from voicecoach.pipeline import prepare

    timeline = prepare(str(routine)).timeline
    start = next(e.start for e in timeline.events if e.value == "hold_start")
    samples, _ = soundfile.read(out, dtype="float32")
    piece = samples[start: start + chirp.size]
    assert np.corrcoef(piece, chirp)[0, 1] > 0.99
    routine.write_text("title: Own\nsounds:\n  hold_end: missing.wav\nsteps:\n  - name: A\n    hold: 3\n")
    result = CliRunner().invoke(cli, ["export", str(routine), "-o", str(out)])
    assert result.exit_code == 2  # the routine's mistake, located
    assert result.stderr == (f"{routine}:3:13: sounds.hold_end: cannot read sound file "
                             f"'{tmp_path / 'missing.wav'}': no such file\n")


def test_a_cold_cache_reports_each_phrase_it_makes(tmp_path: Path) -> None:
    import contextlib
    from collections.abc import Callable, Iterator

    from voicecoach.pipeline import prepare

    seen: list[tuple[int, str]] = []
    steps: list[int] = []

    @contextlib.contextmanager
    def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
        seen.append((total, label))
        yield steps.append

    cache = phrase_cache()
    cache.folder = tmp_path / "phrases"
    prepare(SHORT, cache=cache, progress=progress)
    assert seen == [(cache.synthesized, "Synthesizing speech")]
    assert sum(steps) == cache.synthesized > 5
    seen.clear()
    prepare(SHORT, cache=cache, progress=progress)  # warm: nothing to show
    assert seen == []


def test_phrases_made_two_at_a_time_are_whole_and_each_made_once(tmp_path: Path) -> None:
    """prefetch has the helper speak two phrases at once while others are levelled and
    stored: every phrase comes out whole, once, and sample for sample as it does alone."""
    texts = [f"Hold for {n} seconds, then breathe out." for n in range(3, 15)]
    cache = phrase_cache()
    cache.folder = tmp_path / "phrases"
    cache.prefetch(texts + texts[:3])
    assert cache.synthesized == len(texts)
    alone = Espeak()
    for text in texts:
        stored = np.array(cache.get(text))
        # in-process, espeak-ng's length drifted up to ~300 samples with what it had said
        # before; each phrase now starts from the same state
        assert np.array_equal(stored, alone.synthesize(text)), text
        assert np.max(np.abs(stored)) > 0.3  # levelled speech, not silence or a fragment
    assert cache.synthesized == len(texts)  # all read back from the cache


def test_a_failing_phrase_stops_the_rest(tmp_path: Path) -> None:
    """An engine error surfaces from prefetch, and the phrases not yet started are dropped."""
    from voicecoach.errors import AudioError

    class FailsOnThird:
        key = "fails-on-third"

        def __init__(self) -> None:
            self.engine = Espeak()
            self.calls = 0

        def synthesize(self, text: str) -> np.ndarray:
            self.calls += 1
            if text == "three":
                raise AudioError("no audio for 'three'")
            return self.engine.synthesize(text)

    from voicecoach.speech import PhraseCache

    synthesizer = FailsOnThird()
    cache = PhraseCache(synthesizer, tmp_path)
    words = ["one", "two", "three"] + [f"word {n}" for n in range(40)]
    with pytest.raises(AudioError, match="three"):
        cache.prefetch(words)
    assert synthesizer.calls < len(words)


@pytest.mark.parametrize("voice", ["en-gb", "en-us", "EN-GB", "en", "English (America)", "gmw/en-US"])
def test_voices_by_the_language_codes_people_type(voice: str) -> None:
    result = CliRunner().invoke(cli, ["show", "upper-back-knot", "--engine", "espeak", "--voice", voice])
    assert result.exit_code == 0, result.stderr


def test_a_voice_of_the_other_engine_says_which_engine() -> None:
    result = CliRunner().invoke(cli, ["show", "upper-back-knot", "--engine", "espeak",
                                      "--voice", "en_US-joe-medium"])
    assert (result.exit_code, result.stderr) == (2, "Error: 'en_US-joe-medium' is a piper voice: add "
                                                    "--engine piper\n")
    result = CliRunner().invoke(cli, ["show", "upper-back-knot", "--engine", "piper", "--voice", "en-gb"])
    assert (result.exit_code, result.stderr) == (2, "Error: 'en-gb' is an espeak-ng voice: add "
                                                    "--engine espeak\n")
