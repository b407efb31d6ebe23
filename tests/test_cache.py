"""The cache's entries (written, mapped, checked), its atomic writes, and clearing it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voicecoach import cache
from voicecoach.cache import BadEntry, read_entry, store_atomically, write_entry
from voicecoach.cli import cli

NAME = "ab" * 32


def _size(n: int) -> int:
    return n // 5 + 3


def _entry(samples: np.ndarray, name: str = NAME) -> bytes:
    f = io.BytesIO()
    write_entry(f, name, samples, np.arange(_size(samples.shape[0]), dtype=np.float64))
    return f.getvalue()


@pytest.mark.parametrize("n", [0, 1, 3, 22050, 66151])
def test_an_entry_reads_back_as_written(tmp_path: Path, n: int) -> None:
    samples = np.linspace(-1, 1, n, dtype=np.float32)
    path = tmp_path / "e.vcp"
    path.write_bytes(_entry(samples))
    entry = read_entry(path, _size)
    entry.check(NAME)
    assert entry.samples.dtype == np.float32 and np.array_equal(entry.samples, samples)
    assert entry.summary.dtype == np.float64
    assert np.array_equal(entry.summary, np.arange(_size(n)))
    assert not entry.samples.flags.writeable and not entry.summary.flags.writeable


def test_the_digest_binds_the_content_to_its_name(tmp_path: Path) -> None:
    path = tmp_path / "e.vcp"
    path.write_bytes(_entry(np.ones(100, np.float32)))
    entry = read_entry(path, _size)
    with pytest.raises(BadEntry, match="digest"):
        entry.check("cd" * 32)  # a whole, valid entry under another phrase's name


def test_every_flipped_byte_is_caught(tmp_path: Path) -> None:
    data = _entry(np.linspace(-0.5, 0.5, 300, dtype=np.float32))
    path = tmp_path / "e.vcp"
    caught = 0
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            read_entry(path, _size).check(NAME)
        except BadEntry:
            caught += 1
    # a count that changes the layout, the magic, the version, the reserved field, the
    # digest, the samples, the padding, the summary: every byte is covered
    assert caught == len(data)


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"", "shorter than a header"),
    (lambda d: d[:40], "shorter than a header"),
    (lambda d: d[:-1], "not the"),
    (lambda d: d + b"\0" * 8, "not the"),
    (lambda d: b"\x93NUMPY" + d[6:], "not a voicecoach phrase"),
])
def test_structural_damage_is_refused_before_mapping(
        tmp_path: Path, damage: object, message: str) -> None:
    path = tmp_path / "e.vcp"
    path.write_bytes(damage(_entry(np.ones(100, np.float32))))  # type: ignore[operator]
    with pytest.raises(BadEntry, match=message):
        read_entry(path, _size)


def test_non_finite_values_are_refused_even_with_a_right_digest(tmp_path: Path) -> None:
    path = tmp_path / "e.vcp"
    path.write_bytes(_entry(np.full(50, np.nan, np.float32)))
    with pytest.raises(BadEntry, match="not finite"):
        read_entry(path, _size).check(NAME)


def test_a_store_is_fsynced_before_it_is_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "link", lambda a, b: (events.append("link"), real_link(a, b))[1])
    placed = store_atomically(tmp_path / "x" / "a.vcp", b"data", replace=False)
    assert events == ["fsync", "link"]
    stat = (tmp_path / "x" / "a.vcp").stat()
    assert placed == (stat.st_dev, stat.st_ino)
    assert store_atomically(tmp_path / "x" / "a.vcp", b"other", replace=False) is None  # first wins
    assert (tmp_path / "x" / "a.vcp").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["a.vcp"]  # no temporary left


def test_usage_and_clear_touch_only_our_own_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    ours = [root / "phrases" / "ab" / f"{NAME}.vcp", root / "phrases" / "ab" / f"{NAME}.npy",
            root / "phrases" / "ab" / f"{NAME}.k.npy", root / "phrases" / "cd" / ".part-x1y2z3",
            root / "checked" / f"{'0' * 64}.ok",
            root / "phrases" / "cd" / f".{NAME}.vcp.vc-0123abcd.part",  # a killed writer's
            root / "checked" / f".{'2' * 64}.ok.vc-89abcdef.part"]
    theirs = [root / "notes.txt", root / "phrases" / "ab" / "keep.npy",
              root / "phrases" / "mine" / f"{NAME}.vcp", root / "checked" / "list.ok",
              root / "other" / f"{NAME}.vcp"]
    for i, path in enumerate(ours + theirs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
    outside = tmp_path / "outside.vcp"
    outside.write_bytes(b"precious")
    (root / "phrases" / "ef").symlink_to(tmp_path, target_is_directory=True)
    (root / "phrases" / "ab" / f"{'1' * 64}.vcp").symlink_to(outside)
    found = cache.usage(root)
    assert (found.phrases, found.checked, found.files) == (3, 1, 8)
    removed = cache.clear(root)
    assert (removed.phrases, removed.checked, removed.files) == (3, 1, 8)
    assert removed.others == 6
    assert all(not p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    assert outside.read_bytes() == b"precious" and (tmp_path / "cache").is_dir()
    assert not (root / "checked" / f"{'0' * 64}.ok").exists() and (root / "checked").is_dir()
    assert not (root / "phrases" / "cd").exists()  # emptied, so removed
    assert cache.usage(root).files == 0


def test_the_cache_command_shows_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICECOACH_CACHE_DIR", str(tmp_path / "c"))
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(Path(__file__).parent / "cases" / "short.yaml"),
                                 "-o", str(tmp_path / "s.wav")])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, ["cache"])
    assert shown.exit_code == 0, shown.output
    assert str(tmp_path / "c") in shown.stdout
    entries = list((tmp_path / "c" / "phrases").rglob("*.vcp"))
    size = sum(p.stat().st_size for p in entries)
    assert f"{len(entries)} phrases" in shown.stdout and len(entries) > 5
    assert f"{size / 1e6:.1f} MB" in shown.stdout
    (tmp_path / "c" / "mine.txt").write_text("keep")
    cleared = runner.invoke(cli, ["cache", "--clear"])
    assert cleared.exit_code == 0, cleared.output
    assert f"Removed {len(entries)} phrases" in cleared.stdout
    assert "1 file voicecoach did not make was left" in cleared.stdout
    assert not list((tmp_path / "c").rglob("*.vcp"))
    assert (tmp_path / "c" / "mine.txt").read_text() == "keep"
    again = runner.invoke(cli, ["cache"])
    assert "0 phrases" in again.stdout
