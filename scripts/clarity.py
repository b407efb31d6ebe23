"""How well an offline recogniser understands the coach: word error rate per engine and rate.

Run by hand (it takes minutes; needs `pip install 'voicecoach[clarity]'`, i.e. pocketsphinx
with its bundled US English model):

    .venv/bin/python scripts/clarity.py [--engines espeak piper] [--rates 140 160 180]

Every distinct line of the two bundled routines (default variation and level), and the
pronunciation list below (numbers, units, exercise names), is made as a session makes it
(levelled, in a private phrase cache), resampled to 16 kHz and decoded by PocketSphinx with
its general English language model. WER is word edits over reference words, with numbers
written out as words on both sides and punctuation dropped. A recogniser with a general
language model is a rough listener: what matters is the comparison between engines and
rates, measured alike. The pronunciation list's recognised text is printed, to read (and
listen to: `--keep DIR` writes each as a WAV).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

PRONUNCIATION = (
    "Hold for 30 seconds.",
    "Do this 12 to 15 times.",
    "Three or four times a week, for 4 to 6 weeks.",
    "A high-density, 18-inch foam roller.",
    "Rep 125 of 125.",
    "Ten seconds left.",
    "Downward-facing dog.",
    "Side-bend stretch.",
    "Shoulder shrugs.",
    "Hang from a pull-up bar.",
    "Your rotator cuff and your shoulder blades.",
    "Switch sides: your left side.",
)

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    return str(n)


def words(text: str) -> list[str]:
    text = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", text.lower())
    text = text.replace("-", " ")
    return [w for w in re.sub(r"[^a-z' ]", " ", text).split() if w not in ("and",)]


def edits(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def lines() -> list[str]:
    from voicecoach.compile import compile_routine
    from voicecoach.load import load
    from voicecoach.pipeline import _spoken
    from voicecoach.spec import Options

    found: list[str] = []
    for routine in ("mid-back-knot", "upper-back-knot"):
        found.extend(_spoken(compile_routine(load(routine), None, Options())))
    return list(dict.fromkeys(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["espeak", "piper"], choices=["espeak", "piper"])
    parser.add_argument("--rates", nargs="+", type=int, default=[140, 160, 180])
    parser.add_argument("--keep", type=Path, help="write the pronunciation list's audio here")
    parser.add_argument("--limit", type=int, help="only the first N lines (a quick look)")
    args = parser.parse_args()
    from pocketsphinx import Decoder
    from scipy.signal import resample_poly

    from voicecoach import SAMPLE_RATE
    from voicecoach.pipeline import synthesizer
    from voicecoach.speech import PhraseCache
    from voicecoach.spec import VoiceSettings

    decoder = Decoder(samprate=16000, logfn="/dev/null")
    texts = lines()[: args.limit]
    folder = Path(tempfile.mkdtemp(prefix="vc-clarity-"))

    def heard(samples: np.ndarray) -> str:
        pcm = resample_poly(samples.astype(np.float64), 320, 441)
        padded = np.concatenate([np.zeros(4000), pcm, np.zeros(4000)])
        data = (np.clip(padded, -1, 1) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(data, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    results = []
    for engine in args.engines:
        for rate in args.rates:
            cache = PhraseCache(synthesizer(VoiceSettings(rate_wpm=rate, engine=engine)), folder)  # type: ignore[arg-type]
            cache.prefetch([*texts, *PRONUNCIATION])
            wrong = total = 0
            per_line = []
            for text in texts:
                ref, hyp = words(text), words(heard(cache.get(text)))
                e = edits(ref, hyp)
                wrong, total = wrong + e, total + len(ref)
                per_line.append(e / max(1, len(ref)))
            said = []
            p_wrong = p_total = 0
            for text in PRONUNCIATION:
                samples = cache.get(text)
                got = heard(samples)
                e = edits(words(text), words(got))
                p_wrong, p_total = p_wrong + e, p_total + len(words(text))
                said.append(f"    {text!r} -> {got!r}")
                if args.keep:
                    import soundfile

                    args.keep.mkdir(parents=True, exist_ok=True)
                    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
                    soundfile.write(args.keep / f"{engine}-{rate}-{name}.wav", samples, SAMPLE_RATE)
            results.append((engine, rate, wrong / total, statistics.median(per_line), p_wrong / p_total))
            print(f"{engine} {rate} wpm: WER {wrong / total:.3f} over {len(texts)} lines "
                  f"({total} words; median line {statistics.median(per_line):.3f}); "
                  f"pronunciation list {p_wrong / p_total:.3f}", flush=True)
            print("\n".join(said), flush=True)
    print("\nengine rate  WER(lines) median-line WER(list)")
    for engine, rate, wer, med, plist in results:
        print(f"{engine:6} {rate:4}  {wer:.3f}      {med:.3f}       {plist:.3f}")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
