"""Live playback against a real PulseAudio server, checked in the recording.

Every test plays a signal made in code (tone bursts at known sample positions),
records the null sink's monitor, and finds each burst by cross-correlation: a gap,
a repeat or a drift moves a burst, so "all bursts at one constant offset" means
the stream was played whole and in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.pulse import RECORD_RATE, PulseServer
from tests.terminal import as_a_shell_starts_it
from voicecoach import SAMPLE_RATE
from voicecoach.backends import (
    DEVICE_LATENCY_S,
    DEVICE_LOST_MESSAGE,
    NO_DEVICE_MESSAGE,
    OPEN_TIMEOUT_S,
    PERIOD_MS,
    STALL_S,
    open_player,
)
from voicecoach.errors import AudioError

pytestmark = pytest.mark.sound

REPO = Path(__file__).resolve().parent.parent
BURST_S = 0.04
TOLERANCE_S = 0.020
assert RECORD_RATE == SAMPLE_RATE  # sample positions compare directly


def burst(hz: float) -> np.ndarray:
    n = int(BURST_S * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    return (0.5 * np.hanning(n) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def bursts(
    seconds: float, every_s: float, hz: float, first_s: float = 0.1
) -> tuple[np.ndarray, list[int]]:
    """Silence with a burst every every_s; returns the signal and each burst's start."""
    out = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    b = burst(hz)
    starts = [int(s * SAMPLE_RATE) for s in np.arange(first_s, seconds - BURST_S, every_s)]
    for s in starts:
        out[s : s + len(b)] += b
    return out, starts


def chunked(x: np.ndarray, seed: int = 0) -> Iterator[np.ndarray]:
    """Small chunks of random sizes, as a renderer might yield them."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(100, 3000))
        yield x[i : i + n]
        i += n


def find(rec: np.ndarray, template: np.ndarray, min_gap_s: float = 0.2) -> list[int]:
    """Start of each occurrence of template in rec (FFT cross-correlation)."""
    n = len(rec) + len(template)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(template, size)), size)
    corr = np.abs(corr[: len(rec)])
    peak = float(corr.max())
    if peak < 0.5 * float(np.sum(template**2)):  # nothing of that tone at all
        return []
    above = np.flatnonzero(corr > 0.5 * peak)
    found: list[int] = []
    group = [int(above[0])]
    for i in above[1:]:
        if i - group[-1] > min_gap_s * SAMPLE_RATE:
            found.append(max(group, key=lambda j: corr[j]))
            group = []
        group.append(int(i))
    found.append(max(group, key=lambda j: corr[j]))
    return found


def spread_s(offsets: list[int]) -> float:
    return (max(offsets) - min(offsets)) / SAMPLE_RATE


def test_long_stream_has_no_drift_and_no_gaps(pulse_server: PulseServer) -> None:
    signal_, starts = bursts(20.0, 1.0, 1000)
    rec = pulse_server.record()
    with open_player() as player:
        player.start(chunked(signal_))
        assert player.wait(40)
        assert player.position_samples == len(signal_)
        assert player.underruns == 0  # type: ignore[attr-defined]
    data = rec.stop()
    found = find(data, burst(1000))
    assert len(found) == len(starts)
    offsets = [f - s for f, s in zip(found, starts, strict=True)]
    assert spread_s(offsets) <= TOLERANCE_S, offsets


def test_pause_leaves_a_silence_and_the_rest_intact(pulse_server: PulseServer) -> None:
    # A quiet 300 Hz bed shows the silence; 2 kHz bursts show where the content went.
    bed = (0.2 * np.sin(2 * np.pi * 300 * np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE)).astype(
        np.float32
    )
    marks, starts = bursts(8.0, 0.5, 2000)
    rec = pulse_server.record()
    with open_player() as player:
        player.start(chunked(bed + marks))
        time.sleep(3.2)
        t_pause = time.monotonic()
        player.pause()
        assert player.paused
        time.sleep(0.3)  # the fade-out is taken at the next callback
        frozen = player.position_samples
        time.sleep(0.8)
        assert player.position_samples == frozen
        t_resume = time.monotonic()
        player.resume()
        assert player.wait(20)
        assert player.position_samples == len(bed)
    data = rec.stop()

    win = int(0.005 * SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(data) > 0.05)
    sounding = data[loud[0] : loud[-1]]
    nwin = len(sounding) // win
    rms = np.sqrt(np.mean(sounding[: nwin * win].reshape(nwin, win) ** 2, axis=1))
    silent = rms < 0.02
    assert silent.any()
    silence_s = float(silent.sum()) * win / SAMPLE_RATE
    first = int(np.argmax(silent))
    assert silent[first : first + int(silent.sum())].all(), "more than one silent stretch"
    # Each edge is heard at the next callback: they may differ by up to a period.
    assert abs(silence_s - (t_resume - t_pause)) <= PERIOD_MS / 1000 + 0.03

    found = find(data, burst(2000))
    cut = loud[0] + first * win
    before = [f for f in found if f < cut]
    after = [f for f in found if f > cut]
    assert len(before) + len(after) >= len(starts) - 1  # one may fall on the fade
    off_before = [f - starts[i] for i, f in enumerate(before)]
    off_after = [f - s for f, s in zip(after, starts[-len(after) :], strict=True)]
    assert spread_s(off_before) <= TOLERANCE_S
    assert spread_s(off_after) <= TOLERANCE_S
    jump_s = (np.median(off_after) - np.median(off_before)) / SAMPLE_RATE
    assert abs(jump_s - silence_s) <= 0.025, (jump_s, silence_s)


def test_replace_jumps_to_the_new_stream(pulse_server: PulseServer) -> None:
    old, _ = bursts(10.0, 0.5, 1000)
    new, new_starts = bursts(3.0, 0.5, 3000)
    rec = pulse_server.record()
    with open_player() as player:
        player.start(chunked(old))
        time.sleep(2.0)
        t_replace = time.monotonic()
        player.replace(chunked(new, seed=1), 100_000)
        assert player.position_samples >= 100_000
        assert player.wait(10)
        waited_s = time.monotonic() - t_replace
        assert player.position_samples == 100_000 + len(new)
    data = rec.stop()
    assert waited_s < 3.0 + 1.0  # the old stream's remaining 8 s were dropped
    switch = int(rec.seconds_since_start(t_replace) * RECORD_RATE)
    old_found = find(data, burst(1000))
    assert old_found and max(old_found) < switch + DEVICE_LATENCY_S * RECORD_RATE
    new_found = find(data, burst(3000))
    assert len(new_found) == len(new_starts)
    offsets = [f - s for f, s in zip(new_found, new_starts, strict=True)]
    assert spread_s(offsets) <= TOLERANCE_S
    assert (min(offsets) - switch) / RECORD_RATE <= DEVICE_LATENCY_S + 0.1  # promptly


def test_close_releases_the_device(pulse_server: PulseServer) -> None:
    baseline = _clients(pulse_server)
    player = open_player()
    player.start(chunked(bursts(30.0, 1.0, 1000)[0]))
    time.sleep(0.5)
    assert len(pulse_server.sink_inputs()) == 1
    player.close()
    player.close()  # idempotent
    assert pulse_server.sink_inputs() == []
    assert _clients(pulse_server) == baseline  # the server connection went too

    with pytest.raises(RuntimeError), open_player() as player:
        player.start(chunked(bursts(30.0, 1.0, 1000)[0]))
        time.sleep(0.3)
        raise RuntimeError("an error mid-session")
    assert pulse_server.sink_inputs() == []

    rec = pulse_server.record()
    with open_player() as again:  # the device opens straight after
        again.start(iter([burst(1000)]))
        assert again.wait(5)
    assert find(rec.stop(), burst(1000))


def test_ctrl_c_releases_the_device(pulse_server: PulseServer) -> None:
    child = textwrap.dedent(
        """
        import subprocess, sys, numpy as np
        from voicecoach.backends import open_player
        tone = np.zeros(30 * 22050, dtype=np.float32) + 0.1
        try:
            with open_player() as player:
                player.start(iter([tone]))
                print("playing", flush=True)
                player.wait()
        except KeyboardInterrupt:
            out = subprocess.run(["pactl", "list", "short", "sink-inputs"],
                                 capture_output=True, text=True, check=True).stdout
            print("interrupted", len(out.splitlines()), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        cwd=REPO,
        env={**os.environ, **pulse_server.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_a_shell_starts_it,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "playing\n"
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - t0 < 2.0
    assert (proc.returncode, out, err) == (0, "interrupted 0\n", "")


def test_an_error_in_the_source_reaches_wait(pulse_server: PulseServer) -> None:
    def failing() -> Iterator[np.ndarray]:
        yield burst(1000)
        raise ValueError("render failed")

    with open_player() as player:
        player.start(failing())
        with pytest.raises(ValueError, match="render failed"):
            player.wait(5)
    assert pulse_server.sink_inputs() == []


def test_a_server_that_goes_away_mid_stream_is_reported(
    pulse_server: PulseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = PulseServer(sink_name="vc_doomed").start()
    try:
        for key, value in doomed.env.items():
            monkeypatch.setenv(key, value)
        with open_player() as player:
            player.start(iter([np.zeros(10 * SAMPLE_RATE, dtype=np.float32)]))
            time.sleep(0.5)
            doomed.stop()
            t0 = time.monotonic()
            with pytest.raises(AudioError) as excinfo:
                player.wait(10)
            assert time.monotonic() - t0 < STALL_S + 0.5
            assert str(excinfo.value) == DEVICE_LOST_MESSAGE
    finally:
        doomed.stop()


def test_no_server_is_one_clear_error(
    pulse_server: PulseServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _no_fallback_device(monkeypatch, tmp_path)
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path / 'dead' / 'native'}")
    t0 = time.monotonic()
    with pytest.raises(AudioError) as excinfo:
        open_player()
    assert time.monotonic() - t0 < OPEN_TIMEOUT_S
    assert str(excinfo.value) == NO_DEVICE_MESSAGE
    assert NO_DEVICE_MESSAGE == (
        "no audio device or sound server found; "
        "use `voicecoach export` to write an audio file instead"
    )
    assert capfd.readouterr().err == ""  # libasound's probe errors stay quiet


def test_a_server_that_never_answers_does_not_hang(
    pulse_server: PulseServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_fallback_device(monkeypatch, tmp_path)
    path = tmp_path / "mute"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # take connections, answer nothing
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    monkeypatch.setenv("PULSE_SERVER", f"unix:{path}")
    try:
        t0 = time.monotonic()
        with pytest.raises(AudioError, match="^no audio device or sound server found"):
            open_player()
        assert time.monotonic() - t0 < OPEN_TIMEOUT_S + 1.0
    finally:
        stop.set()
        acceptor.join()
        for conn in accepted:  # the abandoned probe now fails and its thread ends
            conn.close()
        listener.close()


def _no_fallback_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty ALSA configuration: no 'default' PCM even on a machine with a card."""
    empty = tmp_path / "asound.conf"
    empty.write_text("")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(empty))


def _clients(server: PulseServer) -> list[str]:
    out = server.pactl("list", "short", "clients").stdout
    return [ln.split("\t")[0] for ln in out.splitlines() if "pactl" not in ln]
