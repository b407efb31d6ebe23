"""Writing a person's files: regular files only, whole or not at all, nothing left behind.

Every output (audio, captions, playlists, the history CSV) goes through `atomic_path`:

- Only regular files are written. A directory, device, FIFO or socket at the path is
  refused in one line and left as it is (renaming over `/dev/null` as root would
  replace the device node with a file).
- A symlink is followed: the file it names is replaced and the link stays a link, as
  a shell's `>` would do. Its temporary file lies beside the file it names, so the
  final rename stays on one filesystem.
- The data goes to a temporary file beside the target (`.NAME.vc-XXXXXXXX.part`,
  the name shortened so that any name the folder accepts works), is fsynced and then
  renamed over the target, so an interrupted write never leaves half a file and never
  damages the file it was meant to replace.
- A temporary file is removed on any exception, KeyboardInterrupt and the CLI's SIGTERM
  and SIGHUP included. SIGKILL cannot be caught: our temporary files older than an hour
  are swept on the next write into their folder.

OSErrors become one-line VoicecoachErrors naming the path the person gave.
"""

from __future__ import annotations

import errno
import os
import signal
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from .errors import VoicecoachError

__all__ = ["STALE_AFTER_S", "atomic_path", "check_space", "check_target", "describe_os_error",
           "free_bytes", "install", "is_dir", "is_temp_name", "sweep_stale", "temp_beside", "temp_name",
           "write_atomically"]

STALE_AFTER_S = 3600.0
"""A temporary file of ours untouched this long belongs to a process that was killed:
a live writer touches its file every chunk (a second of audio takes milliseconds)."""

_TEMP_MARK = ".vc-"
_TEMP_SUFFIX = ".part"
_TEMP = re.compile(r"\..+\.vc-[0-9a-f]{8}\.part", re.DOTALL)
"""What `temp_name` makes: a dot, (part of) the target's name, .vc-, 8 hex digits, .part."""
_OLD_TEMP = re.compile(r"\..+\.(?:wav|flac|ogg|mp3|vtt|m3u8?|csv)\.part-[0-9a-f]{8}",
                       re.DOTALL | re.IGNORECASE)
"""What voicecoach 0.1 left behind when killed (`.NAME.part-XXXXXXXX`), for its own kinds of file."""

_NAME_MAX = 255
"""Bytes in one file name on Linux, macOS and Windows filesystems; pathconf may say otherwise."""

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return _NAME_MAX


def temp_name(name: str, name_max: int = _NAME_MAX) -> str:
    """A hidden temporary name for `name`, at most `name_max` bytes however long `name` is."""
    tail = f"{_TEMP_MARK}{os.urandom(4).hex()}{_TEMP_SUFFIX}"
    budget = name_max - 1 - len(tail)
    head = name
    while len(os.fsencode(head)) > budget:
        head = head[:-1]
    return f".{head}{tail}"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporary files (this version's or 0.1's)."""
    return bool(_TEMP.fullmatch(name) or _OLD_TEMP.fullmatch(name))


def sweep_stale(directory: Path, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove our temporary files in `directory` untouched for `older_than_s`; returns them.

    Only regular files named exactly as ours and owned by this user; any failure passes
    (a sweep never stops a write).
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = os.scandir(directory)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            if not is_temp_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if (stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
                        and now - info.st_mtime > older_than_s):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
    return removed


def _quoted(path: Path | str) -> str:
    return f"'{path}'"


def describe_os_error(path: Path, error: OSError, real: Path | None = None) -> str:
    """One line a person can act on, naming the file they asked for.

    `real` is where the write really went (through a symlink), when it differs.
    """
    where = real or path
    directory = where.parent
    code = error.errno
    if code == errno.ENOENT:
        if is_dir(directory):  # it is there, yet nothing can be created in it (/proc)
            reason = f"files cannot be created in {_quoted(directory)}"
        else:
            reason = f"directory {_quoted(directory)} does not exist"
    elif code == errno.ENOTDIR:
        reason = f"{_quoted(directory)} is not a directory"
    elif code in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif code == errno.EISDIR:
        reason = "it is a directory"
    elif code == errno.ENOSPC:
        reason = "no space left on device"
    elif code == errno.ENAMETOOLONG:
        size = len(os.fsencode(where.name))
        limit = _name_max(directory) if is_dir(directory) else _NAME_MAX
        reason = (f"file name too long ({size} bytes; at most {limit})" if size > limit
                  else "path too long")
    else:
        reason = (error.strerror or str(error)).lower()
    return f"cannot write {_quoted(path)}: {reason}"


def is_dir(path: Path) -> bool:
    """Path.is_dir that answers False instead of raising (a name too long, a loop)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def make_folder(folder: Path) -> None:
    """An output folder made as `mkdir -p` would, or one line saying why it cannot be."""
    if is_dir(folder):
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise VoicecoachError(f"cannot write into {_quoted(folder)}: it is a file, not a "
                              "folder") from None
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError):
            raise VoicecoachError(f"cannot make folder {_quoted(folder)}: the name holds a NUL "
                                  "character") from None
        reason = describe_os_error(folder, error).split(": ", 1)[-1]
        raise VoicecoachError(f"cannot make folder {_quoted(folder)}: {reason}") from None


def check_target(path: Path) -> Path:
    """Where writing `path` really goes, or a one-line error if it cannot be a regular file.

    Refuses a directory, device, FIFO or socket (through symlinks too), leaving it as it
    is; returns the path with symlinks resolved, so the file a link names is the one
    replaced (a dangling link's target is created, as a shell's `>` would).
    """
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError):  # a NUL byte in the name
            raise VoicecoachError(f"cannot write {_quoted(path)}: the name holds a NUL "
                                  "character") from None
        raise VoicecoachError(describe_os_error(path, error)) from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise VoicecoachError(f"cannot write {_quoted(path)}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _KINDS if test(info.st_mode)), "not a regular file")
            raise VoicecoachError(f"cannot write {_quoted(path)}: it is {kind}; voicecoach "
                                  "writes only regular files")
    real = Path(os.path.realpath(path))
    return path if real == Path(os.path.abspath(path)) else real


def free_bytes(directory: Path) -> int | None:
    """Bytes this process may still write in `directory` (root may use the reserved
    blocks too); None when the filesystem does not say."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    blocks = info.f_bfree if os.geteuid() == 0 else info.f_bavail
    return blocks * info.f_frsize if info.f_blocks else None


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1e3:.0f} kB"
    return f"{size / 1e6:.1f} MB" if size < 1_000_000_000 else f"{size / 1e9:.2f} GB"


def check_space(path: Path, needed: int) -> None:
    """Refuse at once a write that cannot fit: `needed` is a floor on the bytes it takes."""
    real = check_target(path)
    free = free_bytes(real.parent)
    if free is not None and needed > free:
        raise VoicecoachError(f"cannot write {_quoted(path)}: no space left on device (it "
                              f"needs at least {_size(needed)}, {_size(free)} free)")


def _create_temp_beside(path: Path) -> Path:
    """Create an empty, clearly-named temporary file in the target's directory.

    Created with os.open (mode 0o666 less the umask) rather than mkstemp (0o600), so
    the renamed file gets the same permissions as any other file the person writes.
    """
    name_max = _name_max(path.parent)
    while True:
        temp_path = path.with_name(temp_name(path.name, name_max))
        try:
            fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return temp_path


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    """Flush a file (or a directory entry) to disk so a crash cannot leave it empty."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; the rename still holds
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def temp_beside(path: Path) -> Iterator[Path]:
    """A new, empty temporary file in `path`'s folder (named by `temp_name`), removed on
    the way out unless `install` gave it `path`'s name. Every atomic write goes through
    here: the outputs a person asks for (`atomic_path`) and the cache's entries.

    Ctrl-C, SIGTERM or SIGHUP while the file is being created would leave it behind: the
    exception is raised in the main thread at whatever line it has reached. Blocking
    the signals in this thread is not enough (a full test run under load once left a
    file): the kernel then hands the signal to another thread, whose C handler still has
    the main thread raise at its next line. So their
    Python handlers are swapped for ones that only note the signal while the file is
    made, and the noted signal is handled once the file is named for removal.
    """
    held = _HeldStops()
    temp_path: Path | None = None
    try:
        try:
            temp_path = _create_temp_beside(path)
        finally:
            held.release()  # a stop signal that came meanwhile raises here, inside the try
        yield temp_path
    finally:
        if temp_path is not None:
            with suppress(OSError):  # never let cleanup hide the reason we are cleaning up
                temp_path.unlink(missing_ok=True)


class _HeldStops:
    """In the main thread (the only one where Python runs signal handlers, so the only
    one a signal can interrupt): Ctrl-C, SIGTERM and SIGHUP noted, not acted on, until
    release(), which puts their handlers back and calls them for what was noted."""

    def __init__(self) -> None:
        self._saved: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._noted: list[int] = []
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handler = signal.getsignal(signum)
            if callable(handler):  # SIG_IGN and SIG_DFL never raise in Python
                self._saved[signum] = handler
                signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._noted.append(signum)

    def release(self) -> None:
        saved, self._saved = self._saved, {}
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        for signum in self._noted:
            saved[signum](signum, None)


def install(temp_path: Path, path: Path, *, replace: bool = True) -> None:
    """Give a written temporary file its name in one step, after flushing it to disk (so
    after a power cut the name points to its whole content or to the old one). With
    replace=False an existing `path` is kept and FileExistsError raised."""
    _fsync_path(temp_path)
    if replace:
        os.replace(temp_path, path)
    else:
        os.link(temp_path, path)  # atomic, and never over another process's file


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one step.

    On any exception (KeyboardInterrupt included) the temporary file is removed and an
    existing `path` is left untouched. OSErrors become one-line VoicecoachErrors; a
    path that is not (and cannot become) a regular file is refused before anything
    is created.
    """
    real = check_target(path)
    sweep_stale(real.parent)
    try:
        with temp_beside(real) as temp_path:
            yield temp_path
            install(temp_path, real)
    except OSError as error:
        raise VoicecoachError(describe_os_error(path, error, real)) from error
    _fsync_path(real.parent, directory=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (see `atomic_path`)."""
    with atomic_path(path) as temp_path:
        fd = os.open(temp_path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
