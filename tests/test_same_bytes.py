"""The same inputs give the same bytes: cold or warm cache, any order, a busy machine.

Under CPU load, three cold exports of one routine used to give three different files:
espeak-ng carries state from phrase to phrase in the library, and the two prefetch
threads took turns at it in an order the scheduler chose. Every phrase is now spoken
from the same engine state (voicecoach/espeak_server.py).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voicecoach.compile import Options, compile_routine
from voicecoach.load import load
from voicecoach.pipeline import _spoken, phrase_cache
from voicecoach.speech import Espeak

VOICECOACH = [sys.executable, "-m", "voicecoach"]


@pytest.fixture
def cpu_hog() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy process per core (real processes), for the length of the test."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _export(cache: Path, out: Path) -> bytes:
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(cache)}
    done = subprocess.run([*VOICECOACH, "export", "upper-back-knot", "-o", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.mark.parametrize("extension", ["wav", "flac"])
def test_three_cold_exports_under_load_and_a_warm_one_are_the_same_bytes(
        extension: str, tmp_path: Path, cpu_hog: list[subprocess.Popen[bytes]]) -> None:
    files = [_export(tmp_path / f"cold-{i}", tmp_path / f"cold-{i}.{extension}") for i in range(3)]
    assert all(hog.poll() is None for hog in cpu_hog)  # the load lasted
    files.append(_export(tmp_path / "cold-0", tmp_path / f"warm.{extension}"))
    assert len(files[0]) > 1_000_000
    assert files.count(files[0]) == 4


def test_a_phrase_is_the_same_whatever_was_said_before_it(tmp_path: Path) -> None:
    """The engine's own variation: in one process, espeak-ng gave a phrase another
    length and waveform after other phrases. Here three caches are filled in three
    orders, from processes that have already said other things."""
    texts = list(dict.fromkeys(_spoken(compile_routine(load("upper-back-knot"), None, Options()))))
    engine = Espeak()
    engine.synthesize("Something else entirely, to leave the engine somewhere new.")
    stores = []
    for seed in range(3):
        order = texts[:]
        random.Random(seed).shuffle(order)
        cache = phrase_cache()
        cache.folder = tmp_path / f"order-{seed}"
        cache.prefetch(order)
        assert cache.synthesized == len(texts)
        stores.append({t: np.array(cache.get(t)) for t in texts})
    for text in texts:
        assert np.array_equal(stores[0][text], stores[1][text]), text
        assert np.array_equal(stores[0][text], stores[2][text]), text
        assert np.array_equal(stores[0][text], engine.synthesize(text)), text
