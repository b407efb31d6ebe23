"""Ctrl-C, SIGTERM and SIGHUP in the CLI: each raises in the main thread (SIGTERM and
SIGHUP as `Stopped`), so every `finally` runs, except where it may not raise.

CPython runs a signal's handler in the main thread between two bytecodes, wherever that
is, and its exception then unwinds from there. Two places do not survive that:

- Python's import machinery: an exception raised inside it can leave a module lock held
  (python/cpython#91351 and kin), and a thread importing the same module then waits
  forever, and so does the main thread. `play` imports in two threads at start-up (the
  device opens while the routine loads), and a Ctrl-C there hung the process.
- Python code called back from C (cffi callbacks: libsndfile reading from memory): the
  exception is printed as "ignored" and the C library sees a failed read, so a Ctrl-C
  came out as "cannot read sound file". Such calls run inside `shielded()`.

A signal that arrives in either is sent again to the main thread as soon as it is seen
outside both (within LOOK_S), for at most PATIENCE_S: an import that never ends does not
keep the process alive.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import NoReturn

LOOK_S = 0.001
PATIENCE_S = 5.0

_shields = 0
_put_off_since: float | None = None
_put_off_signals: set[int] = set()


@contextmanager
def shielded() -> Iterator[None]:
    """Run C code that calls back into Python here: a stop is taken once it is done."""
    global _shields
    if threading.current_thread() is not threading.main_thread():
        yield  # signals raise in the main thread only
        return
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def put_off(signum: int, frame: FrameType | None) -> bool:
    """For a signal's handler: True if the signal will be sent again shortly instead of
    taken now, because the main thread is importing or shielded."""
    global _put_off_since
    now = time.monotonic()
    patience_over = (not _shields and _put_off_since is not None
                     and now - _put_off_since > PATIENCE_S)  # a shield always ends soon
    if not (_shields or _importing(frame)) or patience_over:
        _put_off_since = None
        _put_off_signals.clear()  # taken now: what was put off is not sent again
        return False
    if _put_off_since is None:
        _put_off_since = now
    if signum not in _put_off_signals:  # the same signal twice meanwhile: still once
        _put_off_signals.add(signum)
        threading.Thread(target=_again, args=(signum, _put_off_since + PATIENCE_S),
                         name="voicecoach-stop-again", daemon=True).start()
    return True


def _again(signum: int, deadline: float) -> None:
    """The signal once more, to the main thread itself (so a wait it is in by then is
    interrupted too), as soon as it is seen outside imports and shields (looking every
    LOOK_S: a program that imports one module after another still has moments between
    them), unless it was taken meanwhile or the program is ending (Python is joining its
    threads, then running its exit handlers: a stop would only break those)."""
    main = threading.main_thread()
    while main.is_alive() and time.monotonic() < deadline:
        time.sleep(LOOK_S)
        if not _shields and not _importing(sys._current_frames().get(main.ident or 0)):
            break
    try:
        _put_off_signals.remove(signum)
    except KeyError:
        return
    if main.is_alive() and main.ident is not None:
        signal.pthread_kill(main.ident, signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised like Ctrl-C's KeyboardInterrupt, so every `finally`
    runs (temporary files are removed, a played session is recorded as stopped)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: KeyboardInterrupt, as Python's own handler, but never where it would be
    lost or hang the process (put_off)."""
    if not put_off(signum, frame):
        raise KeyboardInterrupt


def _stop(signum: int, frame: FrameType | None) -> None:
    if put_off(signum, frame):
        return
    # A second signal while cleaning up ends the process at once, as it would have without us.
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is _stop:
            signal.signal(sig, signal.SIG_DFL)
    raise Stopped(signum)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP raise Stopped in the main thread, where they were left at their
    default (a signal the caller ignores, as under nohup, stays ignored); Ctrl-C raises
    KeyboardInterrupt as before. Neither is raised inside an import or a C library's
    call back into Python (put_off)."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)


@contextmanager
def asked_to_stop(stop: Callable[[], None]) -> Iterator[None]:
    """Run code that an exception raised between any two of its bytecodes would break, and
    that stops itself when asked: asyncio's event loop, which a Ctrl-C while it was being
    made left half made ("Exception ignored in: BaseEventLoop.__del__"). Inside, a stop
    signal calls `stop` (a second one calls it again); once the code has returned, the
    first signal is taken as it would have been (KeyboardInterrupt, Stopped). A signal the
    caller ignores stays ignored."""
    caught: list[int] = []

    def ask(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop()

    ours = (_interrupt, _stop, signal.default_int_handler)
    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, *STOP_SIGNALS)
                if signal.getsignal(sig) in ours}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])


def ignored_from_now() -> None:
    """The command has ended, its work done or stopped, and its exit code is settled. A
    stop signal while Python finishes (atexit closing the espeak-ng helpers, bounded; the
    interpreter's finalization, which puts back the default handlers) printed a traceback
    or turned that code into the signal's, after "Wrote FILE": it is ignored instead. A
    handler the caller set stays."""
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        if signal.getsignal(sig) in (_interrupt, _stop, signal.default_int_handler):
            signal.signal(sig, signal.SIG_IGN)


def interrupted(error: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C, SIGTERM or SIGHUP: one line, and 128 + the signal's number as exit code."""
    signum = error.signum if isinstance(error, Stopped) else signal.SIGINT
    message = "Interrupted." if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}."
    with suppress(OSError, ValueError):  # after SIGHUP the terminal may be gone
        print(message, file=sys.stderr, flush=True)
    sys.exit(128 + signum)
