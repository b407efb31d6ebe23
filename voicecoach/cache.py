"""The on-disk cache: where it lives, and whole-or-nothing writes to it.

Phrases (speech.py) and the routines already checked against the schema (load.py) are
kept here. Nothing in it is precious: a lost or unwritable cache costs time, never a
result, so writes that fail pass silently.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
