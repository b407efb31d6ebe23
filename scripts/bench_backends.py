"""Measure the candidate playback backends against a private PulseAudio null sink.

Run by hand:  python scripts/bench_backends.py [--seconds 30] [--only sounddevice,miniaudio]

For each of sounddevice (PortAudio through ALSA's pulse plugin), miniaudio (its own
PulseAudio backend) and simpleaudio (ALSA 'default', which the pulse plugin routes
to PulseAudio), and for voicecoach's own player, it prints: whether it imports,
time from the call to the first sound in the monitor recording (in process, and
from a cold process launch), whether a stream fed in small chunks is gapless (idle,
and with a pure-Python thread competing for the GIL), how pause/resume behaves, whether the stream is released on an exception, a
KeyboardInterrupt and an error inside the audio source, and CPU use.

The figures are the ones quoted in the backend report; rerun this to check them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RATE = 22050
TONE_HZ = 440.0
AMPLITUDE = 0.5
BACKENDS = ("sounddevice", "miniaudio", "simpleaudio", "voicecoach")
LATENCY_S = 0.1
"""Device buffer asked of every backend, so they are compared on equal terms."""


# --------------------------------------------------------------------------- sources


def sine(seconds: float, hz: float = TONE_HZ, start: int = 0) -> np.ndarray:
    n = np.arange(start, start + int(seconds * RATE), dtype=np.float64)
    return (AMPLITUDE * np.sin(2 * np.pi * hz * n / RATE)).astype(np.float32)


def chunked(
    signal_: np.ndarray, seed: int = 1, low: int = 64, high: int = 1024
) -> Iterator[np.ndarray]:
    """Cut a signal into small chunks of random sizes: a worst case for gaplessness."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(signal_):
        n = int(rng.integers(low, high))
        yield signal_[i : i + n]
        i += n


class Source:
    """Hands out exactly the frames a device asks for, from chunks of any size."""

    def __init__(self, chunks: Iterator[np.ndarray], fail_after: int | None = None) -> None:
        self._it = iter(chunks)
        self._buf = np.zeros(0, dtype=np.float32)
        self.position = 0
        self.exhausted = False
        self._fail_after = fail_after

    def read(self, frames: int) -> np.ndarray:
        if self._fail_after is not None and self.position >= self._fail_after:
            raise RuntimeError("source failed (deliberately)")
        while len(self._buf) < frames and not self.exhausted:
            try:
                self._buf = np.concatenate([self._buf, next(self._it)])
            except StopIteration:
                self.exhausted = True
        out, self._buf = self._buf[:frames], self._buf[frames:]
        self.position += len(out)
        return out


# --------------------------------------------------------------------------- adapters


class Adapter:
    """The least each library needs to play a pulled stream; one per library."""

    name = ""
    can_pause = True

    def play(self, source: Source) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def version() -> str:
        raise NotImplementedError


class SoundDeviceAdapter(Adapter):
    name = "sounddevice"

    def __init__(self) -> None:
        import sounddevice as sd

        self._sd = sd
        self._done = threading.Event()
        self.underflows = 0
        self._stream: Any = None

    @staticmethod
    def version() -> str:
        import sounddevice as sd

        return f"sounddevice {sd.__version__}, {sd.get_portaudio_version()[1]}"

    def play(self, source: Source) -> None:
        sd = self._sd

        def callback(outdata: np.ndarray, frames: int, _t: Any, status: Any) -> None:
            if status.output_underflow:
                self.underflows += 1
            data = source.read(frames)
            outdata[: len(data), 0] = data
            outdata[len(data) :] = 0
            if len(data) < frames:
                raise sd.CallbackStop

        self._stream = sd.OutputStream(
            samplerate=RATE,
            channels=1,
            dtype="float32",
            latency=LATENCY_S,
            callback=callback,
            finished_callback=lambda: self._finished(source),
        )
        self._stream.start()

    def _finished(self, source: Source) -> None:
        # PortAudio calls this on stop() too (our pause): only an exhausted source counts.
        if source.exhausted:
            self._done.set()

    def pause(self) -> None:
        self._stream.stop()

    def resume(self) -> None:
        self._stream.start()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class MiniaudioAdapter(Adapter):
    name = "miniaudio"

    def __init__(self) -> None:
        import miniaudio

        self._ma = miniaudio
        self._done = threading.Event()
        self._source: Source | None = None
        self._device = miniaudio.PlaybackDevice(
            output_format=miniaudio.SampleFormat.FLOAT32,
            nchannels=1,
            sample_rate=RATE,
            buffersize_msec=int(LATENCY_S * 1000 / 2),
            callback_periods=2,
            app_name="voicecoach-bench",
        )
        self._gen: Any = None

    @staticmethod
    def version() -> str:
        import miniaudio

        return f"miniaudio {miniaudio.__version__} (miniaudio C {miniaudio.lib_version()})"

    def play(self, source: Source) -> None:
        self._source = source

        def gen() -> Any:
            frames = yield b""
            while True:
                data = source.read(frames)
                if len(data) < frames:
                    self._done.set()
                frames = yield data.tobytes()

        self._gen = gen()
        next(self._gen)
        self._device.start(self._gen)

    def pause(self) -> None:
        self._device.stop()

    def resume(self) -> None:
        self._device.start(self._gen)

    def wait(self, timeout_s: float) -> bool:
        ok = self._done.wait(timeout_s)
        if ok:
            time.sleep(LATENCY_S)  # no drain notification: allow the buffer to play out
        return ok

    def close(self) -> None:
        self._device.close()


class SimpleaudioAdapter(Adapter):
    """simpleaudio has no streaming API: each chunk is its own play_buffer call."""

    name = "simpleaudio"
    can_pause = False

    def __init__(self) -> None:
        import simpleaudio

        self._sa = simpleaudio
        self._done = threading.Event()
        self._stop = threading.Event()
        self._current: Any = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return f"simpleaudio {version('simpleaudio')}"

    def play(self, source: Source) -> None:
        block = int(RATE * LATENCY_S)

        def run() -> None:
            while not self._stop.is_set():
                data = source.read(block)
                if len(data) == 0:
                    break
                pcm = (np.clip(data, -1, 1) * 32767).astype(np.int16).tobytes()
                self._current = self._sa.play_buffer(pcm, 1, 2, RATE)
                self._current.wait_done()
            self._done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        raise NotImplementedError("simpleaudio cannot pause a buffer")

    resume = pause

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._current is not None:
            self._current.stop()
        if self._thread is not None:
            self._thread.join(timeout=2)


class VoicecoachAdapter(Adapter):
    """voicecoach.backends.open_player(): the implementation the report chose."""

    name = "voicecoach"

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        from voicecoach.backends import open_player

        self._player = open_player()
        self.underflows = 0

    @staticmethod
    def version() -> str:
        sys.path.insert(0, str(REPO))
        from voicecoach import backends

        return f"voicecoach.backends ({backends.DEFAULT_BACKEND})"

    def play(self, source: Source) -> None:
        def chunks() -> Iterator[np.ndarray]:
            while True:
                data = source.read(2048)
                if len(data) == 0:
                    return
                yield data

        self._player.start(chunks())

    def pause(self) -> None:
        self._player.pause()

    def resume(self) -> None:
        self._player.resume()

    def wait(self, timeout_s: float) -> bool:
        return self._player.wait(timeout_s)

    def close(self) -> None:
        self._player.close()


ADAPTERS: dict[str, type[Adapter]] = {
    "sounddevice": SoundDeviceAdapter,
    "miniaudio": MiniaudioAdapter,
    "simpleaudio": SimpleaudioAdapter,
    "voicecoach": VoicecoachAdapter,
}


# --------------------------------------------------------------------------- analysis


def first_sound(rec: np.ndarray, threshold: float = 0.05) -> int | None:
    idx = np.flatnonzero(np.abs(rec) > threshold)
    return int(idx[0]) if len(idx) else None


def sine_report(rec: np.ndarray, expected_s: float) -> dict[str, Any]:
    """Dropouts, clicks and length of a recorded steady sine.

    A pure sine obeys x[n] = 2cos(w) x[n-1] - x[n-2]; any gap, repeat or jump leaves
    a spike in the residual, so counting spike clusters counts discontinuities.
    """
    start = first_sound(rec)
    if start is None:
        return {"sound": False}
    end = int(np.flatnonzero(np.abs(rec) > 0.05)[-1])
    x = rec[start : end + 1].astype(np.float64)
    w = 2 * np.pi * TONE_HZ / RATE
    resid = np.abs(x[2:] - 2 * np.cos(w) * x[1:-1] + x[:-2])
    edge = int(0.01 * RATE)
    resid[:edge] = 0
    resid[-edge:] = 0
    spikes = np.flatnonzero(resid > 0.02)
    events = 0 if len(spikes) == 0 else 1 + int(np.sum(np.diff(spikes) > int(0.01 * RATE)))
    win = int(0.005 * RATE)
    nwin = len(x) // win
    rms = np.sqrt(np.mean(x[: nwin * win].reshape(nwin, win) ** 2, axis=1))
    quiet = rms < 0.5 * AMPLITUDE / np.sqrt(2)
    return {
        "sound": True,
        "length_error_ms": round(((end - start + 1) / RATE - expected_s) * 1000, 1),
        "discontinuities": events,
        "silent_ms": round(float(np.sum(quiet)) * 5.0, 1),
    }


def silent_runs(rec: np.ndarray, min_ms: float = 20) -> list[tuple[float, float]]:
    """(start_s, length_s) of each silent stretch inside the sounding part."""
    win = int(0.005 * RATE)
    start = first_sound(rec)
    if start is None:
        return []
    end = int(np.flatnonzero(np.abs(rec) > 0.05)[-1])
    x = rec[start:end]
    nwin = len(x) // win
    loud = np.sqrt(np.mean(x[: nwin * win].reshape(nwin, win) ** 2, axis=1)) > 0.05
    runs: list[tuple[float, float]] = []
    i = 0
    while i < nwin:
        if not loud[i]:
            j = i
            while j < nwin and not loud[j]:
                j += 1
            if (j - i) * 5 >= min_ms:
                runs.append(((start + i * win) / RATE, (j - i) * win / RATE))
            i = j
        else:
            i += 1
    return runs


# --------------------------------------------------------------------------- measures


def measure_latency(server: Any, backend: str, repeats: int = 5) -> dict[str, Any]:
    """Call-to-first-sound in this process, device already imported."""
    values, opens = [], []
    for _ in range(repeats):
        rec = server.record()
        t0 = time.monotonic()
        with ADAPTERS[backend]() as player:
            opens.append(time.monotonic() - t0)
            player.play(Source(iter([sine(0.5)])))
            player.wait(5)
        time.sleep(0.2)
        data = rec.stop()
        idx = first_sound(data)
        if idx is not None:
            values.append(rec.started_at + idx / RATE - t0)
        time.sleep(0.1)
    if not values:
        return {"first_sound_ms": None}
    return {
        "open_ms_median": round(statistics.median(opens) * 1000, 1),
        "first_sound_ms_median": round(statistics.median(values) * 1000, 1),
        "first_sound_ms_max": round(max(values) * 1000, 1),
    }


def measure_launch(server: Any, backend: str, repeats: int = 7) -> dict[str, Any]:
    """Process launch to first sound: python start-up, imports, open, buffer."""
    values = []
    for _ in range(repeats):
        rec = server.record()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "launch", backend],
            env={**os.environ, **server.env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        time.sleep(0.2)
        data = rec.stop()
        idx = first_sound(data)
        if proc.returncode == 0 and idx is not None:
            values.append(rec.started_at + idx / RATE - t0)
    if not values:
        return {"launch_to_sound_ms": None}
    return {
        "launch_to_sound_ms_median": round(statistics.median(values) * 1000, 1),
        "launch_to_sound_ms_min": round(min(values) * 1000, 1),
    }


def measure_gapless(server: Any, backend: str, seconds: float, load: bool) -> dict[str, Any]:
    """A long sine from small random chunks: any gap or repeat shows; CPU over the run.

    With load, a pure-Python thread spins beside the player, as a renderer would:
    the audio callback then waits for the GIL, and a short device buffer shows it.
    """
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for i in range(10_000):
                x = (x + i * i) % 1_000_003

    spinner = threading.Thread(target=spin, daemon=True)
    if load:
        spinner.start()
    rec = server.record()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    underflows = 0
    with ADAPTERS[backend]() as player:
        player.play(Source(chunked(sine(seconds))))
        finished = player.wait(seconds * 3 + 10)
        underflows = getattr(player, "underflows", 0)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    if load:
        spinner.join()
    time.sleep(0.2)
    data = rec.stop()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = sine_report(data, seconds)
    out.update(finished=finished, wall_s=round(wall, 2), underflow_callbacks=underflows)
    if not load:
        out["cpu_percent_of_one_core"] = round(100 * cpu / wall, 2)
    return out


def measure_pause(server: Any, backend: str) -> dict[str, Any]:
    """Pause 2 s in for 1 s; where does sound stop and restart, is anything lost?"""
    cls = ADAPTERS[backend]
    if not cls.can_pause:
        return {"pause": "not supported"}
    rec = server.record()
    with cls() as player:
        player.play(Source(chunked(sine(6.0))))
        time.sleep(2.0)
        t_pause = time.monotonic()
        player.pause()
        pause_call = time.monotonic() - t_pause
        time.sleep(1.0)
        t_resume = time.monotonic()
        player.resume()
        player.wait(15)
    time.sleep(0.2)
    data = rec.stop()
    runs = silent_runs(data)
    report = sine_report(data, 7.0)
    out: dict[str, Any] = {"pause_call_ms": round(pause_call * 1000, 1)}
    if runs:
        s, length = max(runs, key=lambda r: r[1])
        out["silence_ms"] = round(length * 1000)
        out["pause_to_silence_ms"] = round((rec.started_at + s - t_pause) * 1000)
        out["resume_to_sound_ms"] = round((rec.started_at + s + length - t_resume) * 1000)
        out["silent_runs"] = len(runs)
    else:
        out["silence_ms"] = 0
    out["audio_lost_or_repeated_ms"] = (
        round((report.get("length_error_ms", 0) - out["silence_ms"] + 1000), 1)
        if report.get("sound")
        else None
    )
    out["discontinuities"] = report.get("discontinuities")
    return out


def measure_release(server: Any, backend: str) -> dict[str, Any]:
    """Exception, Ctrl-C and a failing source: is the stream gone, does it hang?"""
    out: dict[str, Any] = {}
    env = {**os.environ, **server.env}
    for mode in ("exception", "source-error", "sigint"):
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", mode, backend],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a run started in the background inherits SIGINT ignored; a person's shell doesn't
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        if mode == "sigint":
            assert proc.stdout is not None
            proc.stdout.readline()  # "playing"
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out[mode] = "HUNG (killed after 20 s)"
            continue
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"rc": proc.returncode}
        result["exit_s"] = round(time.monotonic() - t0, 2)
        result["stderr_lines"] = len(stderr.splitlines())
        out[mode] = result
    return out


# --------------------------------------------------------------------------- children


def sink_input_count() -> int:
    out = subprocess.run(
        ["pactl", "list", "short", "sink-inputs"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return len([ln for ln in out.splitlines() if ln.strip()])


def child(mode: str, backend: str) -> None:
    """Runs in a fresh process, so import and start-up costs are real."""
    cls = ADAPTERS[backend]
    if mode == "launch":
        with cls() as player:
            player.play(Source(iter([sine(0.3)])))
            player.wait(5)
        return
    result: dict[str, Any] = {}
    if mode == "exception":
        try:
            with cls() as player:
                player.play(Source(iter([sine(5)])))
                time.sleep(0.3)
                raise RuntimeError("boom")
        except RuntimeError:
            result["caught"] = True
        result["sink_inputs_after"] = sink_input_count()
    elif mode == "source-error":
        try:
            with cls() as player:
                player.play(Source(chunked(sine(5)), fail_after=RATE // 2))
                result["wait_returned"] = player.wait(3)
        except Exception as e:  # noqa: BLE001 - we report what escaped
            result["raised"] = type(e).__name__
        result["sink_inputs_after"] = sink_input_count()
    elif mode == "sigint":
        try:
            with cls() as player:
                player.play(Source(iter([sine(10)])))
                print("playing", flush=True)
                player.wait(15)
                result["interrupted"] = False
        except KeyboardInterrupt:
            result["interrupted"] = True
        result["sink_inputs_after"] = sink_input_count()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="gapless test length")
    parser.add_argument("--only", default=",".join(BACKENDS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    sys.path.insert(0, str(REPO))
    from tests.pulse import PulseServer

    with PulseServer() as server:
        os.environ.update(server.env)  # before any backend import: PortAudio scans at import
        print(f"PulseAudio null sink '{server.sink_name}' at {server.env['PULSE_SERVER']}")
        results: dict[str, Any] = {}
        for backend in args.only.split(","):
            row: dict[str, Any] = {}
            results[backend] = row
            try:
                row["version"] = ADAPTERS[backend].version()
            except Exception as e:  # noqa: BLE001 - "does it install" is a result
                row["version"] = f"NOT AVAILABLE: {type(e).__name__}: {e}"
                print(f"\n== {backend}: {row['version']}")
                continue
            print(f"\n== {backend}: {row['version']}", flush=True)
            for label, fn in (
                ("latency", lambda b=backend: measure_latency(server, b)),
                ("launch", lambda b=backend: measure_launch(server, b)),
                ("gapless", lambda b=backend: measure_gapless(server, b, args.seconds, False)),
                ("loaded", lambda b=backend: measure_gapless(server, b, args.seconds, True)),
                ("pause", lambda b=backend: measure_pause(server, b)),
                ("release", lambda b=backend: measure_release(server, b)),
            ):
                try:
                    row[label] = fn()
                except Exception as e:  # noqa: BLE001 - keep measuring the others
                    row[label] = f"FAILED: {type(e).__name__}: {e}"
                print(f"  {label:8} {row[label]}", flush=True)
                time.sleep(0.3)
            leftovers = server.sink_inputs()
            if leftovers:
                print(f"  leftover sink inputs: {leftovers}")
        print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
