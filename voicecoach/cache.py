"""The on-disk cache: where it lives, and whole-or-nothing writes to it.

Phrases (speech.py) and the routines already checked against the schema (load.py) are
kept here. Nothing in it is precious: a lost or unwritable cache costs time, never a
result, so writes that fail pass silently.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np


def cache_dir() -> Path:
    env = os.environ.get("VOICECOACH_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("voicecoach"))


def store_atomically(path: Path, data: bytes | Callable[[BinaryIO], object], *,
                     replace: bool = True) -> None:
    """A cache write: whole or not at all, so a process sharing the cache never reads half
    a file; with replace=False an existing file is kept. `data` is the bytes, or writes
    them to the open file. An unwritable cache costs speed, not correctness, so failures
    pass."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    data(f)
            if replace:
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)  # atomic, and never over another process's phrase
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError:
        pass


_NPY_HEADER = re.compile(
    rb"\x93NUMPY\x01\x00v\x00\{'descr': '(<f[48])', 'fortran_order': False, 'shape': \((\d+),\), \} *\n"
)
"""What np.save writes before a 1-D float32 or float64 array: 128 bytes in all."""


def load_vector(path: Path) -> np.ndarray:
    """A 1-D float array saved by np.save, memory-mapped read-only: np.load(mmap_mode="r")
    in an eighth of its time (9 against 68 us here; a warm export opens a hundred).
    Any other header goes to np.load; a file of the wrong size is a ValueError."""
    import numpy as np

    with open(path, "rb") as f:
        match = _NPY_HEADER.fullmatch(f.read(128))
        if match is None:
            loaded: np.ndarray = np.load(path, mmap_mode="r")
            return loaded
        dtype = np.dtype(match.group(1).decode())
        count = int(match.group(2))
        if os.fstat(f.fileno()).st_size != 128 + count * dtype.itemsize:
            raise ValueError(f"{path}: {count} values announced, not the file's size")
        if count == 0:
            empty = np.zeros(0, dtype)
            empty.flags.writeable = False
            return empty
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=128)
