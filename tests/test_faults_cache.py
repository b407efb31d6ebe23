"""Damaged phrase caches: every entry of a warm cache is damaged one way, then exported.

Each case must export the very bytes a clean cache gives (phrases are the same bytes
every time, so a rebuilt phrase is the phrase) and leave every entry sound again. The
cases are what a power cut, a disk, another program or another version can leave: torn
and zero-byte files, flipped bits, foreign formats, and entries with a right digest whose
numbers are wrong (a writer's bug).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voicecoach.cache import ENTRY_SUFFIX, HEADER_BYTES, read_entry, write_entry
from voicecoach.cli import cli
from voicecoach.loudness import sound_summary
from voicecoach.speech import _meaningful, summary_size
from tests.output import without_stage_lines

SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
SR = 22050


def _export(cache: Path, out: Path) -> bytes:
    old = os.environ.get("VOICECOACH_CACHE_DIR")
    os.environ["VOICECOACH_CACHE_DIR"] = str(cache)
    try:
        result = CliRunner().invoke(cli, ["export", SHORT, "-o", str(out)])
    finally:
        if old is None:
            del os.environ["VOICECOACH_CACHE_DIR"]
        else:
            os.environ["VOICECOACH_CACHE_DIR"] = old
    assert result.exit_code == 0, result.output
    return out.read_bytes()


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A warm cache for the short routine, and what it exports."""
    root = tmp_path_factory.mktemp("warm")
    clean = _export(root / "cache", root / "clean.wav")
    return root / "cache", clean


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "phrases").rglob(f"*{ENTRY_SUFFIX}"))


def _sound(path: Path) -> bool:
    try:
        entry = read_entry(path, summary_size)
        entry.check(path.name[: -len(ENTRY_SUFFIX)])
    except (OSError, ValueError):
        return False
    return _meaningful(entry.samples, entry.summary) is None


def _rewrite(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
             name: str | None = None) -> None:
    """Store changed numbers under a right digest and header, as a buggy writer would."""
    entry = read_entry(path, summary_size)
    samples, summary = change(np.array(entry.samples), np.array(entry.summary))
    f = io.BytesIO()
    write_entry(f, name or path.name[: -len(ENTRY_SUFFIX)], samples, summary)
    path.write_bytes(f.getvalue())


def _with_summary(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples, sound_summary(samples, SR)


def _flip(at: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[at(len(data))] ^= 0x04
        path.write_bytes(bytes(data))
    return damage


def _npy(value: object) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        f = io.BytesIO()
        np.save(f, value)
        path.write_bytes(f.getvalue())
    return damage


def _zip(path: Path) -> None:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("samples.npy", path.read_bytes())
    path.write_bytes(f.getvalue())


def _swap_all(paths: list[Path]) -> None:
    """Each entry's whole, valid content under the next one's name."""
    contents = [p.read_bytes() for p in paths]
    for path, content in zip(paths, contents[1:] + contents[:1], strict=True):
        path.write_bytes(content)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("gone"))


FAULTS: dict[str, Callable[[Path], None]] = {
    # a power cut: entries were linked into place without fsync (before this fix)
    "zero bytes": lambda p: p.write_bytes(b""),
    "header only": lambda p: p.write_bytes(p.read_bytes()[:HEADER_BYTES]),
    "torn in the samples": lambda p: p.write_bytes(p.read_bytes()[: HEADER_BYTES + 1000]),
    "torn in the summary": lambda p: p.write_bytes(p.read_bytes()[:-8]),
    "unwritten blocks (zeros)": lambda p: p.write_bytes(
        p.read_bytes()[:HEADER_BYTES] + bytes(p.stat().st_size - HEADER_BYTES)),
    "zeros from 4 KiB on": lambda p: p.write_bytes(
        p.read_bytes()[:4096] + bytes(max(0, p.stat().st_size - 4096))),
    # a disk or another program
    "a bit flipped in the samples": _flip(lambda n: HEADER_BYTES + 401),
    "a bit flipped in the summary": _flip(lambda n: n - 3),
    "a bit flipped in the digest": _flip(lambda n: HEADER_BYTES - 1),
    "a bit flipped in a count": _flip(lambda n: 16),
    "random bytes under a valid header": lambda p: p.write_bytes(
        p.read_bytes()[:HEADER_BYTES] + os.urandom(p.stat().st_size - HEADER_BYTES)),
    "trailing garbage": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 16),
    "a future format version": _flip(lambda n: 8),
    "an old .npy phrase under the name": _npy(np.linspace(-0.5, 0.5, 9000, dtype=np.float32)),
    "int16 samples in .npy": _npy((np.sin(np.arange(9000)) * 20000).astype(np.int16)),
    "complex samples in .npy": _npy(np.ones(100, np.complex64)),
    "2-D samples in .npy": _npy(np.ones((100, 2), np.float32)),
    "a scalar in .npy": _npy(np.float32(0.5)),
    "a zip archive": _zip,
    "a directory in its place": _directory,
    "a dangling symbolic link": _dangling,
    # a right digest over wrong numbers: a writer's bug
    "NaN samples": lambda p: _rewrite(p, lambda s, k: (np.full_like(s, np.nan), k)),
    "NaN samples with their own summary": lambda p: _rewrite(
        p, lambda s, k: (np.full_like(s, np.nan), np.full_like(k, np.nan))),
    "an infinite sample": lambda p: _rewrite(
        p, lambda s, k: (np.where(np.arange(s.size) == 7, np.inf, s).astype(np.float32), k)),
    "int16 values as floats (clipping)": lambda p: _rewrite(
        p, lambda s, k: _with_summary((s * 32767).astype(np.float32))),
    "random samples with their summary": lambda p: _rewrite(
        p, lambda s, k: _with_summary(np.random.default_rng(0).uniform(-2, 2, s.size).astype(np.float32))),
    "samples halved, summary kept": lambda p: _rewrite(p, lambda s, k: (s * np.float32(0.5), k)),
    "a summary whose energies fall": lambda p: _rewrite(p, lambda s, k: (s, np.concatenate([k[:-1], [0.0]]))),
    "another phrase's valid entry (name bound)": lambda p: None,  # done by _swap_all below
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_cache_exports_the_same_bytes_and_is_repaired(
        fault: str, warm: tuple[Path, bytes], tmp_path: Path) -> None:
    clean_cache, clean = warm
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache, symlinks=True)
    entries = _entries(cache)
    assert len(entries) > 5 and all(_sound(p) for p in entries)
    if fault == "another phrase's valid entry (name bound)":
        _swap_all(entries)
    else:
        for path in entries:
            FAULTS[fault](path)
    assert not any(_sound(p) for p in entries)  # the damage is real
    assert _export(cache, tmp_path / "out.wav") == clean
    if fault == "a directory in its place":
        assert all(p.is_dir() for p in entries)  # nothing to replace it with; used our own
    else:
        assert all(_sound(p) for p in entries)
    assert _export(cache, tmp_path / "again.wav") == clean


def test_a_zero_byte_phrase_after_a_power_cut_exports_in_a_real_process(
        warm: tuple[Path, bytes], tmp_path: Path) -> None:
    """The reported failure: "Aborted!" until the cache was deleted by hand."""
    clean_cache, clean = warm
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    for path in _entries(cache)[::2]:
        path.write_bytes(b"")
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(cache)}
    out = tmp_path / "out.wav"
    done = subprocess.run([sys.executable, "-m", "voicecoach", "export", SHORT, "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert without_stage_lines(done.stderr) == "" and out.read_bytes() == clean


def test_two_processes_repair_one_damaged_cache_together(
        warm: tuple[Path, bytes], tmp_path: Path) -> None:
    clean_cache, clean = warm
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    for path in _entries(cache):
        FAULTS["random bytes under a valid header"](path)
    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(cache)}
    runs = [subprocess.Popen([sys.executable, "-m", "voicecoach", "export", SHORT, "-o",
                              str(tmp_path / f"{i}.wav")], env=env, stderr=subprocess.PIPE, text=True)
            for i in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    assert (tmp_path / "0.wav").read_bytes() == clean == (tmp_path / "1.wav").read_bytes()
    assert all(_sound(p) for p in _entries(cache))
    assert not [p for p in (cache / "phrases").rglob(".part-*")]


def test_an_unwritable_cache_makes_each_phrase_once(tmp_path: Path) -> None:
    """Nothing can be stored (a file where the cache's folder should be): the export
    works from phrases kept in memory, each made once."""
    from voicecoach.pipeline import phrase_cache, prepare

    (tmp_path / "phrases").write_text("not a folder")
    phrases = phrase_cache()
    phrases.folder = tmp_path / "phrases"
    session = prepare(SHORT, cache=phrases)
    list(session.rendering.chunks())
    distinct = len({e.value for e in session.timeline.events if e.kind == "speech"})
    assert phrases.synthesized == distinct > 5
    assert (tmp_path / "phrases").read_text() == "not a folder"


def test_an_entry_is_hashed_once_per_process(warm: tuple[Path, bytes], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads stay cheap: the schedule, the loudness and the mix read a phrase several
    times; the same file, unchanged, is checked the first time only."""
    from voicecoach import cache as cache_module
    from voicecoach.pipeline import phrase_cache, prepare

    clean_cache, _ = warm
    checks: list[str] = []
    real = cache_module.Entry.check
    monkeypatch.setattr(cache_module.Entry, "check",
                        lambda self, name: (checks.append(name), real(self, name))[1])
    phrases = phrase_cache()
    phrases.folder = clean_cache / "phrases"
    session = prepare(SHORT, cache=phrases)
    list(session.rendering.chunks())
    assert phrases.synthesized == 0
    assert sorted(checks) == sorted(p.name[: -len(ENTRY_SUFFIX)] for p in _entries(clean_cache))
