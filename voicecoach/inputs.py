"""Reading what a person points us at: routine files and their sound files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path


def read_regular(path: Path, limit_bytes: int,
                 error: Callable[[str, str], Exception]) -> bytes:
    """A regular file's bytes, refused if larger than `limit_bytes`: a device, FIFO or
    directory is never opened for reading (opening a FIFO would wait for a writer)."""
    name = str(path)
    if "\0" in name:
        raise error(name, "the name holds a NUL character")
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise error(name, "it is a directory")
        if not stat.S_ISREG(mode):
            raise error(name, "it is not a regular file (a device, FIFO or socket)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(name, "no such file") from None
    except PermissionError:
        raise error(name, "permission denied") from None
    except OSError as e:
        raise error(name, e.strerror or str(e)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat
            raise error(name, "it is not a regular file (a device, FIFO or socket)")
        try:
            content = f.read(limit_bytes + 1)
        except OSError as e:
            raise error(name, e.strerror or str(e)) from None
    if len(content) > limit_bytes:
        raise error(name, f"it is larger than {limit_bytes // 1024:,} KiB")
    return content
