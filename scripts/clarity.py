"""How much of what the coach says an offline recogniser hears: word error rate (WER) of
PocketSphinx's US English model on the bundled routines' spoken lines, per engine and
speaking rate, and on the pronunciation list (tests/cases/pronunciation.txt: numbers,
units and exercise names). Run by hand; it takes minutes.

    .venv/bin/pip install -e ".[clarity]"               # the recogniser and its scoring
    .venv/bin/python scripts/clarity.py                  # espeak and piper at 130, 160, 190 wpm
    .venv/bin/python scripts/clarity.py --engines piper --rates 160 --every 1
    .venv/bin/python scripts/clarity.py --save clarity/  # the pronunciation list as WAVs, to listen

The recogniser is a proxy for a person: a small, general model that hears natural speech
far better than it hears robotic speech, which is what a coach's voice is judged on. The
references are the lines as written, numbers spelled out (num2words), punctuation and
case dropped; both sides go through the same jiwer transform.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicecoach import SAMPLE_RATE  # noqa: E402
from voicecoach.compile import Say, Timed, compile_routine  # noqa: E402
from voicecoach.load import iter_bundled  # noqa: E402
from voicecoach.pipeline import synthesizer  # noqa: E402
from voicecoach.spec import VoiceSettings  # noqa: E402

RECOGNISER_RATE = 16000
PRONUNCIATION = ROOT / "tests" / "cases" / "pronunciation.txt"


def routine_lines() -> list[str]:
    """Every distinct line the bundled routines say, in every variation, at the middle level."""
    lines: dict[str, None] = {}
    for routine in iter_bundled():
        for variation in routine.variation_names:
            for cue in compile_routine(routine, variation).cues:
                said = [cue] if isinstance(cue, Say) else [m.cue for m in cue.marks] \
                    if isinstance(cue, Timed) else []
                lines.update((c.text, None) for c in said if isinstance(c, Say))
    return [line for line in lines if any(ch.isalpha() for ch in line)]


def pronunciation_lines() -> list[str]:
    return [s for s in (line.strip() for line in PRONUNCIATION.read_text().splitlines())
            if s and not s.startswith("#")]


def spelled(text: str) -> str:
    """The words a listener hears: numbers spelled out, hyphens as spaces."""
    from num2words import num2words

    text = re.sub(r"\d+(\.\d+)?", lambda m: f" {num2words(float(m.group()) if m.group(1) else int(m.group()))} ", text)
    return text.replace("-", " ")


def normalise(texts: list[str]) -> list[str]:
    import jiwer

    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                           jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    return [str(clean(spelled(t))) for t in texts]


class Recogniser:
    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=RECOGNISER_RATE, logfn="/dev/null")

    def hear(self, samples: np.ndarray) -> str:
        x = resample_poly(samples, RECOGNISER_RATE // 50, SAMPLE_RATE // 50)
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def measure(engine: str, rate: int, lines: list[str], recogniser: Recogniser,
            save: Path | None = None) -> tuple[float, float, list[tuple[str, str]]]:
    """WER over `lines`, seconds of speech, and (reference, heard) for every line."""
    import jiwer

    voice = synthesizer(VoiceSettings(engine=engine, rate_wpm=rate))  # type: ignore[arg-type]
    heard, seconds = [], 0.0
    for i, line in enumerate(lines):
        samples = voice.synthesize(line)
        seconds += samples.shape[0] / SAMPLE_RATE
        if save is not None:
            import soundfile

            save.mkdir(parents=True, exist_ok=True)
            soundfile.write(save / f"{engine}-{rate}-{i:02d}.wav", samples, SAMPLE_RATE)
        heard.append(recogniser.hear(samples))
    refs, hyps = normalise(lines), normalise(heard)
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True)]
    return float(jiwer.wer(refs, [h or "-" for h in hyps])), seconds, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="espeak,piper")
    parser.add_argument("--rates", default="130,160,190", help="words a minute, comma-separated")
    parser.add_argument("--every", type=int, default=1, help="take every Nth routine line (1: all)")
    parser.add_argument("--save", type=Path, help="write the pronunciation list's WAVs here")
    parser.add_argument("--show", type=int, default=5, help="worst lines to print per run")
    args = parser.parse_args()
    lines = routine_lines()[:: args.every]
    listed = pronunciation_lines()
    recogniser = Recogniser()
    words = sum(len(t) for t in (s.split() for s in normalise(lines)))
    print(f"{len(lines)} routine lines ({words} words), {len(listed)} pronunciation lines")
    print(f"{'engine':<7} {'wpm':>4} {'routine WER':>12} {'list WER':>9} {'speech':>8} {'took':>6}")
    for engine in args.engines.split(","):
        for rate in (int(r) for r in args.rates.split(",")):
            began = time.monotonic()
            wer, seconds, pairs = measure(engine, rate, lines, recogniser)
            list_wer, _, list_pairs = measure(engine, rate, listed, recogniser, args.save)
            print(f"{engine:<7} {rate:>4} {wer:>12.1%} {list_wer:>9.1%} {seconds:>7.0f}s "
                  f"{time.monotonic() - began:>5.0f}s", flush=True)
            import jiwer

            worst = sorted(list_pairs, key=lambda p: -jiwer.wer(p[0], p[1] or "-"))[: args.show]
            for ref, hyp in worst:
                print(f"    {ref!r} -> {hyp!r}")


if __name__ == "__main__":
    main()
