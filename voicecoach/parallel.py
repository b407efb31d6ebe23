"""Run a few jobs in worker threads, stopping them all when one fails or the main thread
is stopped (Ctrl-C, SIGTERM and SIGHUP arrive there, as exceptions).

Threads, not processes: the work that takes the time (LAME, libsndfile's encoders,
numpy) lets go of Python's lock, the sessions need no copying to a worker, and a
signal's exception reaches a worker's `atomic_path` through `stop`, so every temporary
file is removed as it would be in one thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Stopped", "checked", "cut_in_silence", "locked", "run"]


class Stopped(Exception):
    """A worker's job was stopped because another failed or the main thread was stopped."""


def checked(items: Iterable[T], stop: Callable[[], None]) -> Iterator[T]:
    """The items, with `stop()` called before each (it raises to end the job)."""
    for item in items:
        stop()
        yield item


def locked(update: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """A progress update that several threads may call."""
    if update is None:
        return None
    lock = threading.Lock()

    def locked_update(count: int) -> None:
        with lock:
            update(count)

    return locked_update


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_POLL_S = 0.1
"""How often the waiting main thread wakes, so a signal's handler runs at once."""


@contextmanager
def workers_deaf() -> Iterator[None]:
    """Start threads in here: they are born with the stop signals blocked, so the kernel
    gives every such signal to the main thread. One given to a worker would only trip a
    flag the main thread might not look at until it woke, the export done (CPython runs
    handlers in the main thread, and a thread blocked in a join does not wake for a signal
    it was not sent)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def run(jobs: Sequence[Callable[..., T]], *, workers: int) -> list[T]:
    """Each job called with `stop=` (a callable it calls often, which raises Stopped once the
    run is being stopped); their results in order. The first failure, or an exception in
    the main thread while it waits, stops the others and is raised once all have ended."""
    if len(jobs) <= 1 or workers <= 1:
        return [job(stop=None) for job in jobs]
    stopping = threading.Event()

    def stop() -> None:
        if stopping.is_set():
            raise Stopped("stopped")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voicecoach") as pool:
        futures: list[Future[T]] = []
        try:  # a signal can arrive while the first jobs start and the others are handed out
            for job in jobs:
                with workers_deaf():  # submit starts the pool's threads
                    futures.append(pool.submit(job, stop=stop))
            done: set[Future[T]] = set()
            while len(done) < len(futures) and not any(f.exception() for f in done):
                done, _ = wait(futures, timeout=_POLL_S, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                stopping.set()
                wait(futures)
                raise failed[0].exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        except BaseException:
            stopping.set()  # Ctrl-C or a signal while waiting: end the workers' files too
            for future in futures:
                future.cancel()
            wait(futures)
            raise


def cut_in_silence(total_samples: int, silences: Sequence[tuple[int, int]], *, grid: int,
                   before: int, after: int, min_part: int) -> int | None:
    """Where two encoders can split a session: a multiple of `grid`, nearest the middle,
    with silence over [cut - before, cut + after); None if no silence is long enough, or
    a part would be shorter than `min_part` (MP3's and Ogg's splits both use it)."""
    if total_samples < 2 * min_part:
        return None
    middle = total_samples // 2
    best: int | None = None
    for start, end in silences:
        low = -(-(start + before) // grid) * grid
        high = (end - after) // grid * grid
        if low > high:
            continue
        cut = min(max(middle // grid * grid, low), high)
        if best is None or abs(cut - middle) < abs(best - middle):
            best = cut
    if best is None or not min_part <= best <= total_samples - min_part:
        return None
    return best
