"""A real PulseAudio server with a null sink, for tests that play sound.

The machine running the tests has no sound card, so the tests start their own
sound server in a private runtime directory and record the null sink's monitor:
what the player sent is what the recording holds, sample for sample, in real time.

Use the `pulse_server` fixture in tests; scripts use `PulseServer` as a context
manager. Nothing here touches the user's own PulseAudio, `~/.config/pulse`, or
an already running server: every path lives in a temporary directory.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import pytest

RECORD_RATE = 22050
"""The recording rate: voicecoach's own, so sample positions compare directly."""

APT_PACKAGES = "pulseaudio pulseaudio-utils"
"""What CI must install (Debian/Ubuntu package names) for the sound tests to run."""

_START_TIMEOUT_S = 10.0


class PulseUnavailable(RuntimeError):
    """The server cannot be started here: a missing program, or it would not answer."""


@dataclass
class Recording:
    """A running `parec` on the monitor; `stop()` ends it and returns the samples."""

    process: subprocess.Popen[bytes]
    path: Path
    started_at: float
    """time.monotonic() of the first recorded sample (estimated within ~10 ms)."""
    rate: int = RECORD_RATE

    def stop(self) -> np.ndarray:
        """End the recording; float32 mono samples at `rate`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        data = self.path.read_bytes()
        usable = len(data) - len(data) % 4
        return np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)

    def seconds_since_start(self, at: float) -> float:
        """Where a time.monotonic() instant falls in the recording, in seconds."""
        return at - self.started_at


@dataclass
class PulseServer:
    """A private PulseAudio daemon whose default sink is a null sink."""

    sink_name: str = "vc_test"
    sink_rate: int = 44100
    sink_channels: int = 2
    monitor_latency_ms: int | None = 10
    """The latency the sink's monitor is read at while the server runs. 10 ms keeps the
    null sink real-time; None reads it at PulseAudio's default, and the sink then holds
    about 1 to 2 s, as a Bluetooth headset can."""
    runtime_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vc-pulse-")))
    env: dict[str, str] = field(default_factory=dict)
    """Environment for subprocesses (and applied to os.environ by the fixture)."""
    _daemon: subprocess.Popen[bytes] | None = None
    _keeper: subprocess.Popen[bytes] | None = None
    _recordings: list[Recording] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "pulse" / "native"

    @property
    def monitor(self) -> str:
        return f"{self.sink_name}.monitor"

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / "pulseaudio.log"

    def start(self) -> Self:
        """Start the daemon and wait until `pactl info` answers."""
        missing = [p for p in ("pulseaudio", "pactl", "parec") if shutil.which(p) is None]
        if missing:
            raise PulseUnavailable(f"{', '.join(missing)} not found on PATH")
        pulse_dir = self.runtime_dir / "pulse"
        pulse_dir.mkdir(mode=0o700, exist_ok=True)
        client_conf = self.runtime_dir / "client.conf"
        # No autospawn: a client must never start a second, default-configured daemon.
        client_conf.write_text("autospawn = no\n")
        self.env = {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_RUNTIME_PATH": str(pulse_dir),
            "PULSE_SERVER": f"unix:{self.socket_path}",
            "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_COOKIE": str(self.runtime_dir / "cookie"),
        }
        daemon_env = {**os.environ, **self.env, "HOME": str(self.runtime_dir)}
        sink = (
            f"module-null-sink sink_name={self.sink_name} rate={self.sink_rate} "
            f"channels={self.sink_channels}"
        )
        cmd = [
            "pulseaudio",
            "--daemonize=no",
            "--system=false",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "-n",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket_path}",
            f"--load={sink}",
            "--log-target=stderr",
        ]
        with self.log_path.open("wb") as log:
            self._daemon = subprocess.Popen(
                cmd,
                env=daemon_env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._daemon.poll() is not None:
                self.stop()
                raise PulseUnavailable(f"pulseaudio exited at start:\n{self._log_tail()}")
            if self.pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PulseUnavailable(f"pulseaudio did not answer in {_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        self.pactl("set-default-sink", self.sink_name)
        # An idle null sink drifts to a 2 s latency and then renders in 2 s blocks: a
        # new stream plays 0.1 s, then stalls until the sink's timer fires. A real card
        # does not do that. A low-latency reader on the monitor keeps it real-time.
        self._keeper = subprocess.Popen(
            self._parec_command(self.monitor_latency_ms),
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.monitor_latency_ms is not None and self.monitor_latency_ms < 100:
            self._wait_for_latency(lambda usec: usec < 50_000, "never reached a low latency")
        else:
            self._wait_for_latency(lambda usec: usec > 500_000, "never held half a second")
        return self

    def sink_latency_usec(self) -> int | None:
        out = self.pactl("list", "sinks").stdout
        found = re.search(r"^\s*Latency: (\d+) usec", out, re.MULTILINE)
        return int(found.group(1)) if found else None

    def _wait_for_latency(self, wanted: Callable[[int], bool], failure: str) -> None:
        """Wait until the sink's latency settles: for a real-time sink, out of the first
        2 s block the idle sink rendered before the keeper came."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            latency = self.sink_latency_usec()
            if latency is not None and wanted(latency):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise PulseUnavailable(f"the null sink {failure}")
            time.sleep(0.05)

    def _parec_command(self, latency_ms: int | None = 10) -> list[str]:
        latency = [] if latency_ms is None else [f"--latency-msec={latency_ms}"]
        return [
            "parec",
            f"--device={self.monitor}",
            "--raw",
            "--format=float32le",
            f"--rate={RECORD_RATE}",
            "--channels=1",
            *latency,
        ]

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run pactl against this server."""
        return subprocess.run(
            ["pactl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def sink_inputs(self) -> list[str]:
        """Streams currently playing into the server (one `pactl list short` line each)."""
        out = self.pactl("list", "short", "sink-inputs").stdout
        return [line for line in out.splitlines() if line.strip()]

    def record(self) -> Recording:
        """Start recording the null sink's monitor; returns once samples are flowing.

        started_at is estimated from the data itself: each poll of the growing file
        gives "now minus the audio already received", and the earliest such value
        is the wall-clock time of the first sample, late by at most the transport
        latency (10 ms requested, or what `monitor_latency_ms` says).
        """
        fd, name = tempfile.mkstemp(prefix="rec-", suffix=".f32", dir=self.runtime_dir)
        os.close(fd)
        path = Path(name)
        cmd = self._parec_command(self.monitor_latency_ms)
        errors = path.with_suffix(".err")
        with path.open("wb") as out, errors.open("wb") as err:
            proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=out, stderr=err)
        estimates: list[float] = []
        deadline = time.monotonic() + 5.0
        while len(estimates) < 20:
            now = time.monotonic()
            frames = path.stat().st_size // 4
            if frames:
                estimates.append(now - frames / RECORD_RATE)
            elif proc.poll() is not None or now > deadline:
                proc.kill()
                proc.wait()
                why = errors.read_text(errors="replace").strip() or f"exit code {proc.returncode}"
                raise PulseUnavailable(f"parec did not start recording the monitor: {why}")
            time.sleep(0.005)
        recording = Recording(process=proc, path=path, started_at=min(estimates))
        self._recordings.append(recording)
        return recording

    def stop(self) -> None:
        """Stop recordings and the daemon, and remove the runtime directory."""
        for rec in self._recordings:
            if rec.process.poll() is None:
                rec.process.kill()
                rec.process.wait()
        self._recordings.clear()
        if self._keeper is not None and self._keeper.poll() is None:
            self._keeper.kill()
            self._keeper.wait()
        self._keeper = None
        if self._daemon is not None and self._daemon.poll() is None:
            self._daemon.terminate()
            try:
                self._daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait()
        self._daemon = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: a SIGKILLed test run must not leave a daemon behind (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def started(server: PulseServer) -> PulseServer:
    """The server, running; a test that needs one skips without PulseAudio, or fails on CI."""
    try:
        server.start()
    except PulseUnavailable as e:
        shutil.rmtree(server.runtime_dir, ignore_errors=True)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"sound tests need PulseAudio: {e} (apt-get install {APT_PACKAGES})")
        pytest.skip(f"no PulseAudio here: {e}")
    return server


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A running server for the whole session; its env is applied to os.environ.

    Skips when PulseAudio is missing, except on CI (CI=true), where a missing
    server would silently skip every sound test, so it fails and names the packages.
    """
    server = started(PulseServer())
    with pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        try:
            yield server
        finally:
            server.stop()
