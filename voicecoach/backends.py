"""Live playback: one small Player interface over the sound device.

The default backend is miniaudio (pyminiaudio): it talks to PulseAudio (and
PipeWire's pulse server) natively, falls back to ALSA, bundles its C code in the
wheel so nothing needs installing beside it, imports in ~30 ms, and played a 30 s
stream of small chunks with no gap. sounddevice and simpleaudio were measured
against it (scripts/bench_backends.py): PortAudio on Debian reaches PulseAudio
only through ALSA's pulse plugin, cuts the last ~latency of a stream at close,
and drops buffered audio on stop; simpleaudio cannot stream or pause.

Everything that matters for a coach lives here, not in the library: a feeder
thread renders ahead into a bounded queue, the device callback only copies from
it (so a slow render step is an underrun, not a crash), pause and skip are
decided in the callback with 5 ms fades (no clicks), and close() always releases
both the stream and the server connection.

numpy and miniaudio are imported inside functions only: `voicecoach --help` must
start without them.
"""

from __future__ import annotations

import collections
import importlib
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from voicecoach import SAMPLE_RATE
from voicecoach.errors import AudioError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Samples = NDArray[np.float32]

NO_DEVICE_MESSAGE = (
    "no audio device or sound server found; use `voicecoach export` to write an audio file instead"
)
DEVICE_LOST_MESSAGE = (
    "the audio device or sound server stopped during playback; "
    "use `voicecoach export` to write an audio file instead"
)
DEVICE_SILENT_MESSAGE = (
    "the audio device took the stream but never started playing it; "
    "use `voicecoach export` to write an audio file instead"
)

PERIOD_MS = 150
"""Device callback period, and the knob that sets the slack. miniaudio's PulseAudio
backend asks the server to hold about one period whatever PERIODS is, so a late
callback underruns once it is about half a period late: measured, a stall of
25 ms at a 50 ms period, 60 ms at 100 ms, 80 ms at 150 ms, 95 ms at 200 ms
became a gap. At 50 ms, 1 run in 10 (20 s each) had a 30 ms gap on this 2-core
VM. 150 ms absorbs a GIL-holding render step or a busy machine, and pause and
skip are still heard within ~0.3 s. First sound does not depend on it."""
PERIODS = 2
DEVICE_LATENCY_S = PERIOD_MS * PERIODS / 1000
"""Upper bound on audio handed over but not yet heard: pause and skip take effect
within it, and wait() lets it play out before reporting the end."""
RENDER_AHEAD_S = 2.0
"""How far the feeder renders ahead: absorbs a slow phrase synthesis."""
OPEN_TIMEOUT_S = 3.0
"""A sound server that accepts but never answers must not hang the CLI."""
STALL_S = 1.0
"""No callback for this long (ten periods) means the server or device went away:
miniaudio then simply stops calling, and wait() would otherwise wait forever. Unless the
device has shown that it holds more (see START_TIMEOUT_S)."""
START_TIMEOUT_S = 5.0
"""How long a device may take to start playing: it takes a first fill, then asks for
more only once it plays in real time. That wait is how much it buffers, which miniaudio
does not report: a PulseAudio sink whose monitor is read at its default latency waited
1.2 s (measured, 8 runs), a Bluetooth headset can too. It has started once two
callbacks in a row come paced; from then on a stall is no callback for 1.5 times the
longest wait it has shown (at least STALL_S, at most this), and the end of the stream is
given that long to play out. A device that never starts is reported after this, as one
that does not play (DEVICE_SILENT_MESSAGE)."""
STALL_FACTOR = 1.5
PACED_GAP_S = 0.05
"""Callbacks closer together than this are the device filling its buffer at start."""
FADE_SAMPLES = SAMPLE_RATE // 200
"""5 ms fades at pause, resume and replace: a cut mid-waveform clicks."""

# Tried in this order; a backend not built for this OS fails fast and is skipped.
# NULL is left out on purpose (miniaudio would "play" into nothing without error),
# and JACK too: a failed libjack probe prints to stderr, and JACK desktops bridge
# PulseAudio anyway.
_MINIAUDIO_BACKENDS = (
    "WASAPI",
    "COREAUDIO",
    "PULSEAUDIO",
    "ALSA",
    "SNDIO",
    "AUDIO4",
    "OSS",
    "DSOUND",
    "WINMM",
)


class Player(Protocol):
    """What the CLI needs from live playback; see MiniaudioPlayer for the semantics."""

    def start(self, chunks: Iterator[Samples]) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def paused(self) -> bool: ...

    @property
    def position_samples(self) -> int: ...

    def replace(self, chunks: Iterator[Samples], position_samples: int) -> None: ...

    def wait(self, timeout_s: float | None = None) -> bool: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def open_player() -> Player:
    """Open the sound device, or raise AudioError(NO_DEVICE_MESSAGE) within OPEN_TIMEOUT_S."""
    return OpeningPlayer().result()


class OpeningPlayer:
    """The sound device, opening in the background from the moment this is made.

    `play` starts it first thing, so connecting to the sound server overlaps loading the
    routine and preparing the session instead of coming after them. With `first`, the
    player starts playing those chunks as soon as the device is open (`play` hands it the
    session's opening silence, see play.LeadIn). result() waits for the player
    (OPEN_TIMEOUT_S from the start in all) and raises what opening raised; abandon()
    closes it, now or whenever it opens, if the caller gives up first.
    """

    def __init__(self, first: Iterator[Samples] | None = None,
                 opener: Callable[[], _Device] | None = None,
                 timeout_s: float = OPEN_TIMEOUT_S) -> None:
        open_device = opener or _open_miniaudio_device

        def open_player() -> MiniaudioPlayer:
            player = MiniaudioPlayer(open_device())
            if first is not None:
                try:
                    player.start(first)
                except BaseException:
                    player.close()
                    raise
            return player

        self._opening: _Opening[MiniaudioPlayer] = _Opening(open_player, timeout_s)

    def result(self) -> Player:
        return self._opening.result()

    def abandon(self) -> None:
        self._opening.abandon()


# --------------------------------------------------------------------------- device


class _Device(Protocol):
    def start(self, generator: Generator[bytes, int, None]) -> None: ...

    def close(self) -> None: ...


def _open_miniaudio_device() -> _Device:
    """A float32 mono device at SAMPLE_RATE, on the first backend that opens."""
    try:
        ma: Any = importlib.import_module("miniaudio")
    except ImportError as e:  # a broken install, not a missing device: say which
        raise AudioError(f"cannot load the miniaudio package: {e}") from e
    _quiet_alsa()
    backends = [getattr(ma.Backend, n) for n in _MINIAUDIO_BACKENDS if hasattr(ma.Backend, n)]
    try:
        device = ma.PlaybackDevice(
            output_format=ma.SampleFormat.FLOAT32,
            nchannels=1,
            sample_rate=SAMPLE_RATE,
            buffersize_msec=PERIOD_MS,
            callback_periods=PERIODS,
            backends=backends,
            app_name="voicecoach",
        )
    except ma.MiniaudioError as e:
        raise AudioError(NO_DEVICE_MESSAGE) from e
    return _MiniaudioDevice(ma, device)


class _MiniaudioDevice:
    """Wraps pyminiaudio's PlaybackDevice to fix its one leak.

    PlaybackDevice.close() uninitialises the device but never its context, which
    holds a second connection to the sound server for the life of the process.
    """

    def __init__(self, ma: Any, device: Any) -> None:
        self._ma = ma
        self._device = device
        self.backend: str = device.backend
        self._closed = False

    def start(self, generator: Generator[bytes, int, None]) -> None:
        self._device.start(generator)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._device.close()
        context = getattr(self._device, "_context", None)
        if context is not None:
            self._ma.lib.ma_context_uninit(context)


class _Closes(Protocol):
    def close(self) -> None: ...


Opened = TypeVar("Opened", bound=_Closes)


class _Opening(Generic[Opened]):
    """opener() run in a daemon thread from the moment this is made.

    result() waits until timeout_s after the start; then, or after abandon() (and on
    Ctrl-C while waiting), what opens late is closed by the thread itself."""

    def __init__(self, opener: Callable[[], Opened], timeout_s: float) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._outcome: list[Opened | BaseException] = []
        self._deadline = time.monotonic() + timeout_s
        threading.Thread(target=self._work, args=(opener,), name="voicecoach-open",
                         daemon=True).start()

    def _work(self, opener: Callable[[], Opened]) -> None:
        try:
            item: Opened | BaseException = opener()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            item = e
        with self._lock:
            if self._abandoned:
                if not isinstance(item, BaseException):
                    item.close()
                return
            self._outcome.append(item)
        self._done.set()

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            items, self._outcome = self._outcome, []
        for item in items:
            if not isinstance(item, BaseException):
                item.close()

    def result(self) -> Opened:
        try:
            self._done.wait(max(0.0, self._deadline - time.monotonic()))
        except BaseException:  # Ctrl-C while opening: nobody else would close it
            self.abandon()
            raise
        with self._lock:
            self._abandoned = True  # from now on the caller owns it, or nobody does
            if not self._outcome:
                raise AudioError(NO_DEVICE_MESSAGE)
            item = self._outcome.pop()
        if isinstance(item, AudioError):
            raise item
        if isinstance(item, BaseException):
            raise AudioError(NO_DEVICE_MESSAGE) from item
        return item


_alsa_handler: Any = None


def _quiet_alsa() -> None:
    """Stop libasound printing its errors (dozens of lines when there is no card).

    miniaudio falls back to ALSA when no sound server answers, and libasound
    writes each failed probe to stderr; a person should see only our one line.
    """
    global _alsa_handler
    if _alsa_handler is not None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        asound = ctypes.CDLL("libasound.so.2")
    except OSError:
        return
    # The real signature ends in "...": a callee that ignores every argument is safe.
    handler_type = ctypes.CFUNCTYPE(None)
    _alsa_handler = handler_type(lambda: None)  # kept alive: libasound keeps the pointer
    asound.snd_lib_error_set_handler(_alsa_handler)


# --------------------------------------------------------------------------- player


class MiniaudioPlayer:
    """A pulled stream of float32 mono chunks at SAMPLE_RATE, played gaplessly.

    - start(chunks): a feeder thread pulls chunks, up to RENDER_AHEAD_S ahead; the
      device starts once one period is queued, or the stream ended sooner, so a
      short first chunk cannot underrun.
    - position_samples: samples of the stream handed to the device (what is heard
      lags it by up to DEVICE_LATENCY_S). It does not move while paused or during
      an underrun, so it stays exact on the session's timeline; replace() sets it.
    - pause()/resume(): decided in the next callback, with 5 ms fades; the device
      keeps running and plays silence. Both are heard within DEVICE_LATENCY_S and
      lose nothing (miniaudio's own stop() corks the stream: it clicks at both ends).
    - replace(chunks, position_samples): the next callback fades out the old
      stream and plays the new one, for "next step" and "restart step".
    - wait(timeout_s): True once the stream is exhausted and has played out;
      re-raises an exception raised by the chunk iterator, and raises
      AudioError(DEVICE_LOST_MESSAGE) if the device stops calling back.
    - close(): idempotent; stops the device, releases the server connection.
    """

    def __init__(self, device: _Device) -> None:
        self._device = device
        self._cond = threading.Condition(threading.Lock())
        # Serialises device start (feeder) and close (caller): miniaudio deadlocks in
        # ma_device_uninit when it runs while ma_device_start is still under way.
        self._device_lock = threading.Lock()
        self._queue: collections.deque[Samples] = collections.deque()
        self._queued = 0
        self._chunks: Iterator[Samples] | None = None
        self._generation = 0
        self._source_done = False
        self._error: BaseException | None = None
        self._position = 0
        self._paused = False
        self._fading_out = False
        self._fade_in_left = 0
        self._tail: Samples | None = None
        self._played_out_at: float | None = None
        self._device_started = False
        self._device_started_at = 0.0
        self._last_callback_at = 0.0
        self._longest_gap_s = 0.0
        """The longest the device has gone between callbacks: at start, how much it holds."""
        self._paced = 0
        """Callbacks in a row that came paced (PACED_GAP_S apart or more)."""
        self._playing = False
        """Two came paced: the device plays in real time."""
        self._closed = False
        self._feeder: threading.Thread | None = None
        self.underruns = 0
        """Callbacks that found the queue empty mid-stream: the render fell behind."""

    # -- public interface

    @property
    def position_samples(self) -> int:
        return self._position

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, chunks: Iterator[Samples]) -> None:
        """Begin playing chunks; a second call acts as replace(chunks, 0)."""
        with self._cond:
            if self._closed:
                raise AudioError("the audio device is closed")
            if self._feeder is not None:
                started = True
            else:
                started = False
                self._set_source(chunks, 0, fade=False)
                self._feeder = threading.Thread(
                    target=self._feed, name="voicecoach-feeder", daemon=True
                )
                self._feeder.start()
        if started:
            self.replace(chunks, 0)

    def pause(self) -> None:
        with self._cond:
            if not self._paused:
                self._paused = True
                self._fading_out = True
                self._fade_in_left = 0

    def resume(self) -> None:
        with self._cond:
            if self._paused:
                self._paused = False
                self._fading_out = False
                self._fade_in_left = FADE_SAMPLES
                self._cond.notify_all()

    def replace(self, chunks: Iterator[Samples], position_samples: int) -> None:
        """Swap the source at the next callback; position_samples names where it starts."""
        with self._cond:
            if self._feeder is None:
                raise AudioError("replace() before start()")
            self._set_source(chunks, position_samples, fade=True)
            self._cond.notify_all()

    def wait(self, timeout_s: float | None = None) -> bool:
        """True when the stream is exhausted and has played out; False on timeout or close."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._closed:
                    return False
                self._check_device(time.monotonic())
                if self._played_out_at is not None and not self._paused:
                    played_out_at = self._played_out_at
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Short waits keep Ctrl-C prompt on every platform.
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
        # The last sample was handed to the device; let its buffer play out.
        drain = played_out_at + self.latency_s + 0.02 - time.monotonic()
        if deadline is not None and drain > deadline - time.monotonic():
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False
        if drain > 0:
            time.sleep(drain)
        return True

    @property
    def latency_s(self) -> float:
        """What the device holds, as far as it has shown: DEVICE_LATENCY_S at least."""
        return max(DEVICE_LATENCY_S, min(self._longest_gap_s, START_TIMEOUT_S))

    def _check_device(self, now: float) -> None:
        """Raise if the device never started playing in real time, or stopped calling for
        longer than it has shown it buffers. Called with the lock held."""
        if not self._device_started:
            return
        if not self._playing:  # still starting: its first fill, then the wait it buffers
            if now - self._device_started_at > START_TIMEOUT_S:
                raise AudioError(DEVICE_SILENT_MESSAGE)
            return
        stall = min(START_TIMEOUT_S, max(STALL_S, STALL_FACTOR * self._longest_gap_s))
        if now - self._last_callback_at > stall:
            raise AudioError(DEVICE_LOST_MESSAGE)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        # Never under _cond: uninit waits for a running callback, which takes it.
        with self._device_lock:
            self._device.close()
        if self._feeder is not None and self._feeder is not threading.current_thread():
            # It may be inside a slow render step; it exits after it, as a daemon.
            self._feeder.join(timeout=0.5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- shared by the threads, called with the lock held

    def _set_source(self, chunks: Iterator[Samples], position: int, *, fade: bool) -> None:
        if fade:
            if not self._paused and self._queue:
                self._tail = self._take(FADE_SAMPLES)
                self._tail *= _ramp(len(self._tail), down=True)
            self._fade_in_left = FADE_SAMPLES
        self._queue.clear()
        self._queued = 0
        self._chunks = chunks
        self._generation += 1
        self._source_done = False
        self._played_out_at = None
        self._position = position

    def _take(self, frames: int) -> Samples:
        """Up to frames samples off the head of the queue, as one new array."""
        import numpy as np

        parts: list[Samples] = []
        need = frames
        while need > 0 and self._queue:
            head = self._queue[0]
            if len(head) <= need:
                parts.append(self._queue.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._queue[0] = head[need:]
                need = 0
        taken = frames - need
        self._queued -= taken
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    # -- feeder thread

    def _feed(self) -> None:
        """Pull chunks ahead of the callback; the only thread that runs the iterator."""
        import numpy as np

        running: Iterator[Samples] | None = None
        try:
            while True:
                with self._cond:
                    while not self._closed and (
                        self._source_done or self._queued >= RENDER_AHEAD_S * SAMPLE_RATE
                    ):
                        self._cond.wait()
                    if self._closed:
                        return
                    chunks, generation = self._chunks, self._generation
                if chunks is not running:
                    _close_iterator(running)
                    running = chunks
                assert chunks is not None
                try:
                    chunk = np.asarray(next(chunks), dtype=np.float32)
                    if chunk.ndim != 1:
                        raise ValueError(f"audio chunks must be 1-D, got shape {chunk.shape}")
                except StopIteration:
                    chunk, done, error = None, True, None
                except BaseException as e:  # noqa: BLE001 - re-raised by wait()
                    chunk, done, error = None, True, e
                else:
                    done, error = False, None
                start_device = False
                with self._cond:
                    if generation != self._generation or self._closed:
                        continue
                    if error is not None:
                        self._error = error
                    if done:
                        self._source_done = True
                    elif chunk is not None and len(chunk):
                        self._queue.append(chunk)
                        self._queued += len(chunk)
                    # Prefill one period: a short first chunk must not underrun.
                    start_device = not self._device_started and (
                        done or self._queued >= PERIOD_MS * SAMPLE_RATE // 1000
                    )
                    if start_device:
                        self._device_started = True
                        self._device_started_at = self._last_callback_at = time.monotonic()
                    self._cond.notify_all()
                if start_device:
                    try:
                        pump = self._pump()
                        next(pump)  # pyminiaudio sends frame counts to a started generator
                        with self._device_lock:
                            if self._closed:
                                return
                            self._device.start(pump)
                    except Exception as e:  # noqa: BLE001 - the device vanished since open
                        with self._cond:
                            self._error = AudioError(f"{NO_DEVICE_MESSAGE} ({e})")
                            self._cond.notify_all()
                        return
        finally:
            _close_iterator(running)

    # -- audio thread

    def _pump(self) -> Generator[bytes, int, None]:
        """The generator miniaudio calls from its audio thread: frames in, bytes out."""
        frames = yield b""
        while True:
            frames = yield self._fill(frames).tobytes()

    def _fill(self, frames: int) -> Samples:
        """One callback's worth of samples; never raises, never blocks on the feeder."""
        import numpy as np

        out = np.zeros(frames, dtype=np.float32)
        try:
            with self._cond:
                now = time.monotonic()
                gap = now - self._last_callback_at
                self._longest_gap_s = max(self._longest_gap_s, gap)
                self._paced = self._paced + 1 if gap >= PACED_GAP_S else 0
                self._playing = self._playing or self._paced >= 2
                self._last_callback_at = now
                filled = 0
                if self._tail is not None:
                    n = min(len(self._tail), frames)
                    out[:n] = self._tail[:n]
                    self._tail = self._tail[n:] if n < len(self._tail) else None
                    filled = n
                if self._paused:
                    if self._fading_out:
                        self._fading_out = False
                        fade = self._take(min(FADE_SAMPLES, frames - filled))
                        out[filled : filled + len(fade)] = fade * _ramp(len(fade), down=True)
                        self._position += len(fade)
                    return out
                data = self._take(frames - filled)
                if self._fade_in_left and len(data):
                    n = min(self._fade_in_left, len(data))
                    start = FADE_SAMPLES - self._fade_in_left
                    data[:n] *= _ramp(FADE_SAMPLES, down=False)[start : start + n]
                    self._fade_in_left -= n
                out[filled : filled + len(data)] = data
                self._position += len(data)
                if filled + len(data) < frames:
                    if self._source_done and not self._queue:
                        if self._played_out_at is None:
                            self._played_out_at = time.monotonic()
                    elif self._device_started:
                        self.underruns += 1
                self._cond.notify_all()
        except Exception as e:  # noqa: BLE001 - raising here silences the device for good
            self._error = e
        return out


def _ramp(n: int, *, down: bool) -> Samples:
    import numpy as np

    ramp = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
    return ramp[::-1].copy() if down else ramp


def _close_iterator(it: object) -> None:
    """Close a replaced generator so its finally blocks (temp files, TTS) run now."""
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001, S110 - the source is dropped either way
            pass
