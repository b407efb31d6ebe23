"""The on-disk cache: where it lives, whole-or-nothing writes, checked entries, clearing.

Phrases (speech.py) and the routines already checked against the schema (load.py) are
kept here. Nothing in it is precious: a lost, damaged or unwritable cache costs time,
never a result. Writes that fail pass silently; an entry that fails its check when read
is treated as missing and made again.

A phrase entry is one file: a 64-byte header (magic, format version, the number of
float32 samples and of float64 summary values, and a SHA-256 digest), the samples, then
the summary. The digest covers the entry's own name and every byte after the header, so
a torn, truncated, zero-byte or foreign file, or a whole entry under the wrong name, is
refused; `read_entry` maps it read-only, `PhraseCache` (speech.py) checks what the numbers
mean. Files are fsynced before they are linked into place: after a power cut a name
points to its whole content or is missing, never to blocks that were not written.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from .files import install, is_temp_name, temp_beside

if TYPE_CHECKING:
    import numpy as np


def user_dir(kind: Literal["cache", "data"]) -> Path:
    """voicecoach's cache or data folder: $VOICECOACH_CACHE_DIR / $VOICECOACH_DATA_DIR, else
    the platform's (~/.cache/voicecoach, ~/.local/share/voicecoach on Linux)."""
    env = os.environ.get(f"VOICECOACH_{kind.upper()}_DIR")
    if env:
        return Path(env)
    import platformdirs

    find = platformdirs.user_cache_dir if kind == "cache" else platformdirs.user_data_dir
    return Path(find("voicecoach"))


def cache_dir() -> Path:
    return user_dir("cache")


OLD_TEMP_PREFIX = ".part-"
"""Temporary files of earlier versions' cache writes (now named as every other, files.temp_name)."""


def store_atomically(path: Path, data: bytes | Callable[[BinaryIO], object], *,
                     replace: bool = True) -> tuple[int, int] | None:
    """A cache write (files.temp_beside and files.install, as every atomic write): whole or
    not at all, so a process sharing the cache never reads half a file; with replace=False
    an existing file is kept. `data` is the bytes, or writes them to the open file. The
    folder is not flushed: a name lost to a power cut is only a miss. Returns the
    (device, inode) of the file this call put in place, None if it put none. An
    unwritable cache costs speed, not correctness, so failures pass."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temp_beside(path) as temp_path:
            with temp_path.open("r+b") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    data(f)
                stat = os.fstat(f.fileno())
            install(temp_path, path, replace=replace)
        return stat.st_dev, stat.st_ino
    except OSError:  # FileExistsError included: another process's entry stays
        return None


# ----------------------------------------------------------------------------- entries

ENTRY_SUFFIX = ".vcp"
ENTRY_MAGIC = b"VCPHRASE"
ENTRY_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ32s")
HEADER_BYTES = _HEADER.size  # 64: the samples start 8-aligned, and so does the summary
_DIGEST_AT = HEADER_BYTES - 32


class BadEntry(ValueError):
    """A cache entry that is not whole, not ours, or not what its header says."""


def _layout(samples: int, summary: int) -> tuple[int, int]:
    """Where the summary starts, and the file's size."""
    at = HEADER_BYTES + 4 * samples
    at += -at % 8
    return at, at + 8 * summary


def _digest(name: bytes, *parts: object) -> bytes:
    """SHA-256 of the entry's name, its header up to the digest, and its content."""
    digest = hashlib.sha256(name)
    for part in parts:
        digest.update(part)  # type: ignore[arg-type]  # buffers: numpy arrays, memoryviews
    return digest.digest()


def write_entry(f: BinaryIO, name: str, samples: np.ndarray, summary: np.ndarray) -> None:
    """Write an entry (float32 samples, float64 summary) for the name it is stored under."""
    import numpy as np

    samples = np.ascontiguousarray(samples, dtype="<f4")
    summary = np.ascontiguousarray(summary, dtype="<f8")
    at, _ = _layout(samples.shape[0], summary.shape[0])
    pad = b"\0" * (at - HEADER_BYTES - samples.nbytes)
    head = _HEADER.pack(ENTRY_MAGIC, ENTRY_VERSION, 0, samples.shape[0], summary.shape[0], b"")
    digest = _digest(name.encode(), head[:_DIGEST_AT], samples, pad, summary)
    f.write(head[:_DIGEST_AT] + digest)
    f.write(samples.tobytes())
    f.write(pad)
    f.write(summary.tobytes())


@dataclass(frozen=True)
class Entry:
    """An entry as found on disk, mapped read-only; `check` before trusting it."""

    samples: np.ndarray
    summary: np.ndarray
    identity: tuple[int, int, int, int]
    """device, inode, size, mtime: the same file, unchanged, need not be checked again."""
    _head: bytes
    _data: memoryview

    def check(self, name: str) -> None:
        """Raise BadEntry unless the content is what was written for `name`, all finite.
        Costs one SHA-256 pass (1.7 GB/s here, ~0.16 ms for 3 s of speech)."""
        import numpy as np

        if _digest(name.encode(), self._head[:_DIGEST_AT], self._data) != self._head[_DIGEST_AT:]:
            raise BadEntry("its content does not match its digest")
        if not (np.isfinite(self.samples).all() and np.isfinite(self.summary).all()):
            raise BadEntry("it holds values that are not finite")


def read_entry(path: Path, summary_size: Callable[[int], int]) -> Entry:
    """Map the entry at `path`: FileNotFoundError if there is none, BadEntry if its header,
    its size, or its summary's length for its number of samples (`summary_size`) is
    wrong, another OSError if it cannot be read."""
    import numpy as np

    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            raise BadEntry(f"{len(head)} bytes, shorter than a header")
        magic, version, _, count, summary_count, _ = _HEADER.unpack(head)
        if magic != ENTRY_MAGIC or version != ENTRY_VERSION:
            raise BadEntry("not a voicecoach phrase of this version")
        if summary_count != summary_size(count):
            raise BadEntry(f"{summary_count} summary values for {count} samples")
        at, size = _layout(count, summary_count)
        stat = os.fstat(f.fileno())
        if stat.st_size != size:
            raise BadEntry(f"{stat.st_size} bytes, not the {size} its header says")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = memoryview(mapped)[HEADER_BYTES:]
    samples = np.frombuffer(mapped, dtype="<f4", count=count, offset=HEADER_BYTES)
    summary = np.frombuffer(mapped, dtype="<f8", count=summary_count, offset=at)
    return Entry(samples, summary, (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns),
                 head, data)


# ----------------------------------------------------------------------- what is ours

_HEX64 = "[0-9a-f]{64}"
_OURS = {
    "phrases": re.compile(rf"{_HEX64}(\{ENTRY_SUFFIX}|\.npy|\.k\.npy)|{re.escape(OLD_TEMP_PREFIX)}\w+"),
    "checked": re.compile(rf"{_HEX64}\.ok|{re.escape(OLD_TEMP_PREFIX)}\w+"),
    "music": re.compile(rf"{_HEX64}\.json"),
}
"""The files voicecoach writes, by folder: phrase entries (and the .npy pairs of earlier
versions), schema markers (load.py), music tracks' measurements (music.py), and
temporary files a killed process left behind.
Phrases sit one level down, in folders named by two hex digits."""
_SHARD = re.compile("[0-9a-f]{2}")


def _is_temp(name: str) -> bool:
    return is_temp_name(name) or name.startswith(OLD_TEMP_PREFIX)


def _is_phrase(kind: str, name: str) -> bool:
    return kind == "phrases" and (name.endswith(ENTRY_SUFFIX)
                                  or (name.endswith(".npy") and not name.endswith(".k.npy")))


@dataclass
class Usage:
    folder: Path
    phrases: int = 0
    checked: int = 0
    files: int = 0
    bytes: int = 0
    others: int = 0
    """Files in the cache's folders that voicecoach did not write: never removed."""


def _walk(folder: Path) -> Iterator[tuple[str, os.DirEntry[str] | None, Path]]:
    """(kind, our file, None) for each of our files, ("other", None, path) for the rest,
    and ("dir", None, path) for each of our folders, deepest first. Symbolic links are
    never followed; of the cache folder itself only its top level is looked at."""
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for top_entry in it:
            if top_entry.name not in _OURS or not top_entry.is_dir(follow_symlinks=False):
                yield "other", None, Path(top_entry.path)
    for kind, pattern in _OURS.items():
        top = folder / kind
        if not top.is_dir() or top.is_symlink():
            continue
        subdirs = [top]
        if kind == "phrases":
            subdirs = []
            with os.scandir(top) as it:
                for d in it:
                    if d.is_dir(follow_symlinks=False) and _SHARD.fullmatch(d.name):
                        subdirs.append(Path(d.path))
                    else:
                        yield "other", None, Path(d.path)
        for sub in subdirs:
            with os.scandir(sub) as it:
                for f in it:
                    ours = ((pattern.fullmatch(f.name) or is_temp_name(f.name))
                            and not f.is_dir(follow_symlinks=False))
                    yield (kind, f, Path(f.path)) if ours else ("other", None, Path(f.path))
            if sub != top:
                yield "dir", None, sub
        yield "dir", None, top


def usage(folder: Path | None = None) -> Usage:
    """What the cache holds: phrases, schema markers, their size on disk."""
    result = Usage(folder or cache_dir())
    for kind, entry, _ in _walk(result.folder):
        if entry is None:
            result.others += kind == "other"
            continue
        result.files += 1
        with contextlib.suppress(OSError):
            result.bytes += entry.stat(follow_symlinks=False).st_size
        if _is_phrase(kind, entry.name):
            result.phrases += 1
        elif kind == "checked" and not _is_temp(entry.name):
            result.checked += 1
    return result


def clear(folder: Path | None = None) -> Usage:
    """Remove voicecoach's own files from the cache, and its folders once empty; anything
    else found there is left alone (and counted). Returns what was removed."""
    removed = Usage(folder or cache_dir())
    for kind, entry, path in _walk(removed.folder):
        if kind == "other":
            removed.others += 1
        elif kind == "dir":
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty
        elif entry is not None:
            try:
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.files += 1
            removed.bytes += size
            if _is_phrase(kind, entry.name):
                removed.phrases += 1
            elif kind == "checked" and not _is_temp(entry.name):
                removed.checked += 1
    return removed
