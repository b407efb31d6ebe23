"""Write the shipped tone WAVs, sounds/<kind>.wav, from voicecoach.tones.generate().

Run from anywhere after changing a tone:  python scripts/make_sounds.py [--out DIR]

The files are 16-bit PCM, mono, at voicecoach.SAMPLE_RATE. They depend only on the
code (no dither, no timestamps), so running this twice gives byte-identical files;
tests/test_tones.py fails if the shipped ones no longer match generate().
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's tones, installed or not

from voicecoach import SAMPLE_RATE  # noqa: E402
from voicecoach.tones import TONE_KINDS, generate  # noqa: E402

PCM16_SCALE = 32768
"""libsndfile reads 16-bit PCM as value / 32768, so writing with the same scale makes
the shipped file read back as generate() to within half a step."""


def write_sounds(folder: Path) -> list[Path]:
    """Write every kind's WAV into folder; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in TONE_KINDS:
        samples = generate(kind).astype(np.float64)
        pcm = np.clip(np.round(samples * PCM16_SCALE), -32768, 32767).astype(np.int16)
        path = folder / f"{kind}.wav"
        soundfile.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "sounds", help="folder to write into (default: sounds/)"
    )
    for path in write_sounds(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
