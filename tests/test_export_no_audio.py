"""Making speech never touches audio output: a hung sound server cannot stall an export.

espeak-ng 1.51's espeak_Initialize probes the sound server whatever the output mode (its
pcaudiolib opens a PulseAudio stream), so a server that accepts and never answers held a
cold export for 30 s instead of 1.5 s. Here such a server is a unix socket that accepts
and never answers, named by PULSE_SERVER and at XDG_RUNTIME_DIR/pulse/native; it
counts the connections it accepts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from voicecoach import piper

SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
VOICECOACH = [sys.executable, "-m", "voicecoach"]


@dataclass
class SilentServer:
    """A unix socket that accepts every connection and never says a word."""

    path: Path
    accepted: int = 0
    _sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_UNIX))
    _held: list[socket.socket] = field(default_factory=list)
    _stop: bool = False

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sock.bind(str(self.path))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # held open, never answered

    def stop(self) -> None:
        self._stop = True
        time.sleep(0.15)
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture
def silent_server(tmp_path: Path) -> Iterator[tuple[SilentServer, dict[str, str]]]:
    runtime = tmp_path / "runtime"
    server = SilentServer(runtime / "pulse" / "native")
    server.start()
    env = {**os.environ, "PULSE_SERVER": f"unix:{server.path}", "XDG_RUNTIME_DIR": str(runtime),
           "VOICECOACH_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PULSE_RUNTIME_PATH", None)
    try:
        yield server, env
    finally:
        server.stop()


def test_the_silent_server_is_found_by_a_pulseaudio_client(
        silent_server: tuple[SilentServer, dict[str, str]]) -> None:
    """The control: a real client connects to it (and waits), so the tests below that see
    no connection mean that nothing tried."""
    server, env = silent_server
    pactl = shutil.which("pactl")
    if pactl is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("pactl not found: apt-get install pulseaudio-utils")
        pytest.skip("pactl not found")
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([pactl, "info"], env=env, capture_output=True, timeout=2)
    assert server.accepted >= 1


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_a_cold_export_never_connects_to_the_sound_server(
        engine: str, silent_server: tuple[SilentServer, dict[str, str]], tmp_path: Path) -> None:
    server, env = silent_server
    if engine == "piper" and not piper.installed():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("piper is not installed: pip install -e '.[neural]'")
        pytest.skip("piper is not installed")
    out = tmp_path / "out.wav"
    started = time.monotonic()
    done = subprocess.run([*VOICECOACH, "export", SHORT, "--engine", engine, "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 100_000
    assert server.accepted == 0
    assert took < 20  # the hang was 30 s; a cold piper export takes a few seconds


def test_listing_voices_never_connects_to_the_sound_server(
        silent_server: tuple[SilentServer, dict[str, str]]) -> None:
    server, env = silent_server
    started = time.monotonic()
    done = subprocess.run([*VOICECOACH, "voices"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gmw/en" in done.stdout
    assert server.accepted == 0 and time.monotonic() - started < 20
