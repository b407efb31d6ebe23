"""Whether Piper's decoder can be run over windows of a sentence and give the same samples.

A measurement for issue 14's memory target, not part of voicecoach. It needs the `onnx`
package, which voicecoach does not depend on (install it into the venv to run this):

    .venv/bin/pip install onnx
    .venv/bin/python scripts/probe_decoder_windows.py [--routine mid-back-knot] [--window 160] [--halo 16]

Why: a cold Piper export's peak memory is mostly the decoder's working memory, about 800
bytes per output sample of the sentence being made (six float tensors of 32 channels at
its last upsampling stage), two sentences at a time. The decoder (`/dec/...`, HiFi-GAN:
convolutions, transposed convolutions, LeakyReLU, sums, tanh) is local in time, so it can
be run over windows of the sentence's frames, each with `--halo` frames of context either
side, and the windows' centres laid end to end.

This splits the model in two (everything up to the decoder's input, then the decoder),
makes every sentence of the routine's spoken lines with the whole model, with the two
halves, and with the decoder over windows of at most `--window` frames, and says how many
differ by even one bit, with the decoder's CPU time whole and in windows. Then it shows
where windows stop being exact: the receptive field (context needed either side) and the
narrowest window that is exact. In MLAS (onnxruntime's CPU kernels) a GEMM over 64
columns or fewer sums its products in bigger blocks (MlasSgemmOperation's StrideK), so a
window of 64 frames or fewer, whose first convolution has 64 columns or fewer, rounds
differently from the whole sentence.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HOP = 256
"""Output samples per frame of the decoder's input (8 x 8 x 4 upsampling)."""


def sessions(paths: list[str]) -> list[Any]:
    ort = importlib.import_module("onnxruntime")

    out = []
    for path in paths:
        options = ort.SessionOptions()  # as voicecoach.piper._open_voice makes them
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        out.append(ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"]))
    return out


def split(model: Path, folder: Path) -> tuple[str, str, str]:
    """The model cut at the decoder's input: (front model, decoder model, the cut tensor)."""
    onnx = importlib.import_module("onnx")
    importlib.import_module("onnx.utils")

    graph = onnx.load(str(model), load_external_data=False).graph
    made = {o for n in graph.node if n.name.startswith("/dec/") for o in n.output}
    weights = {t.name for t in graph.initializer}
    cut = {i for n in graph.node if n.name.startswith("/dec/") for i in n.input
           if i and i not in made and i not in weights}
    if len(cut) != 1:
        raise SystemExit(f"no single decoder input in {model}: {sorted(cut)}")
    tensor = cut.pop()
    front, decoder = str(folder / "front.onnx"), str(folder / "decoder.onnx")
    onnx.utils.extract_model(str(model), front, [i.name for i in graph.input], [tensor])
    onnx.utils.extract_model(str(model), decoder, [tensor], [o.name for o in graph.output])
    return front, decoder, tensor


def windows(frames: int, window: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(start, end) of each window and of its centre: centres of equal length tiling the
    sentence, each window its centre with `halo` frames either side (less at its ends)."""
    if frames <= window:
        return [(0, frames, 0, frames)]
    count = -(-frames // (window - 2 * halo))
    edges = [round(i * frames / count) for i in range(count + 1)]
    return [(max(0, a - halo), min(frames, b + halo), a, b) for a, b in pairwise(edges)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routine", default="mid-back-knot")
    parser.add_argument("--window", type=int, default=160, help="most frames in a window")
    parser.add_argument("--halo", type=int, default=16, help="frames of context either side")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import piper
    from voicecoach import piper as vp
    from voicecoach.compile import compile_routine
    from voicecoach.load import load
    from voicecoach.pipeline import _spoken

    model = vp.resolve(None)
    with tempfile.TemporaryDirectory(prefix="vc-probe-") as folder:
        front_path, decoder_path, tensor = split(model.path, Path(folder))
        whole, front, decoder = sessions([str(model.path), front_path, decoder_path])
    config = json.loads(Path(f"{model.path}.json").read_text(encoding="utf-8"))
    voice = piper.PiperVoice(config=piper.PiperConfig.from_dict(config), session=whole)
    texts = list(dict.fromkeys(_spoken(compile_routine(load(args.routine)))))

    def decode(z: np.ndarray) -> np.ndarray:
        out: np.ndarray = decoder.run(None, {tensor: np.ascontiguousarray(z)})[0].reshape(-1)
        return out

    sentences = split_differ = window_differ = 0
    whole_cpu = windowed_cpu = 0.0
    longest = None
    for text in texts:
        for phonemes in voice.phonemize(text):
            ids = voice.phonemes_to_ids(phonemes)
            feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                     "scales": np.array([vp.NOISE_SCALE, 1.0, vp.NOISE_W_SCALE], np.float32)}
            reference = whole.run(None, feeds)[0].reshape(-1)
            z = front.run(None, feeds)[0]
            started = time.thread_time()
            once = decode(z)
            whole_cpu += time.thread_time() - started
            started = time.thread_time()
            parts = [decode(z[:, :, lo:hi])[(a - lo) * HOP:(b - lo) * HOP]
                     for lo, hi, a, b in windows(z.shape[2], args.window, args.halo)]
            windowed_cpu += time.thread_time() - started
            sentences += 1
            split_differ += not np.array_equal(reference, once)
            window_differ += not np.array_equal(once, np.concatenate(parts))
            if longest is None or z.shape[2] > longest[0].shape[2]:
                longest = (z, once)
    print(f"{args.routine}: {sentences} sentences of {len(texts)} lines; cut at {tensor}")
    print(f"  the two halves differ from the whole model in {split_differ}")
    print(f"  windows of <= {args.window} frames, halo {args.halo}: {window_differ} differ; decoder CPU "
          f"{windowed_cpu:.2f} s against {whole_cpu:.2f} s whole ({windowed_cpu / whole_cpu - 1:+.0%})")
    assert longest is not None
    z, once = longest
    frames = z.shape[2]
    lo, hi = frames // 2 - 60, frames // 2 + 60
    out = decode(z[:, :, lo:hi]).reshape(-1, HOP) != once[lo * HOP:hi * HOP].reshape(-1, HOP)
    wrong = np.nonzero(out.any(axis=1))[0]
    left = int(wrong[wrong < 60].max(initial=-1)) + 1
    right = hi - lo - int(wrong[wrong >= 60].min(initial=hi - lo))
    print(f"  longest sentence ({frames} frames): a window without context is wrong for {left} frames "
          f"at its start and {right} at its end")
    inexact = []
    start = frames // 2 - 50
    for width in range(48, 100):
        out = decode(z[:, :, start:start + width])
        inner = slice(20 * HOP, (width - 20) * HOP)
        if not np.array_equal(out[inner], once[start * HOP:(start + width) * HOP][inner]):
            inexact.append(width)
    print(f"  windows of 48-99 frames whose middle differs: "
          f"{f'{min(inexact)}-{max(inexact)} frames' if inexact else 'none'}")


if __name__ == "__main__":
    main()
