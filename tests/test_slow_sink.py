"""Playback on a device that holds a second or two, as a Bluetooth headset can.

A real PulseAudio null sink whose monitor is read at PulseAudio's default latency holds
about 1 to 2 s: after its first fill a new stream is asked for more only after a second
or so. `play` took that for a lost server (no callback for 1 s) and failed 13 of 20
times. Here the same sink, the real `play`, and a recording of what came out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.pulse import PulseServer, started
from voicecoach.backends import (DEVICE_SILENT_MESSAGE, START_TIMEOUT_S, STALL_S,
                                 MiniaudioPlayer, open_player)
from voicecoach.errors import AudioError
from voicecoach.pipeline import prepare
from tests.output import without_stage_lines

VOICECOACH = [sys.executable, "-m", "voicecoach"]
SR = 22050
pytestmark = pytest.mark.sound

TINY = """\
title: Tiny
steps:
  - name: Only
    say: [Hold it.]
    hold: 2
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[PulseServer]:
    server = started(PulseServer(sink_name="vc_slow", monitor_latency_ms=None))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_env(slow_server: PulseServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in slow_server.env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ}


def test_the_sink_really_holds_over_a_second_before_asking_for_more(
        slow_server: PulseServer, slow_env: dict[str, str]) -> None:
    """The condition itself, measured from the device's callbacks: the first wait is
    longer than the old 1 s stall limit."""
    latency = slow_server.sink_latency_usec()
    assert latency is not None and latency > 500_000
    with open_player() as player:
        assert isinstance(player, MiniaudioPlayer)
        player.start(iter([np.zeros(3 * SR, np.float32)]))
        assert player.wait(15)
        assert player.latency_s > STALL_S


@pytest.mark.parametrize("run", range(3))
def test_play_waits_for_the_slow_device_and_plays_it_all(
        run: int, slow_server: PulseServer, slow_env: dict[str, str], tmp_path: Path) -> None:
    routine = tmp_path / "tiny.yaml"
    routine.write_text(TINY)
    reference_path = tmp_path / "tiny.wav"
    subprocess.run([*VOICECOACH, "export", str(routine), "-o", str(reference_path)],
                   check=True, capture_output=True, env=slow_env)
    reference, _ = soundfile.read(reference_path, dtype="float32")
    timeline = prepare(str(routine)).timeline
    recording = slow_server.record()
    started = time.monotonic()
    result = subprocess.run([*VOICECOACH, "play", str(routine), "--no-log"], env=slow_env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    time.sleep(3.0)  # the recorder holds as much as the sink
    recorded = recording.stop()
    assert result.returncode == 0, result.stderr
    assert without_stage_lines(result.stderr) == "Done.\n"
    assert took > timeline.duration_s
    # the whole session came out, its last sound too, in place
    last = timeline.events[-1]
    tail = reference[last.start: last.end]
    scores = np.correlate(recorded, tail, mode="valid")
    at = int(np.argmax(scores))
    assert np.corrcoef(recorded[at: at + tail.size], tail)[0, 1] > 0.95
    first = reference[timeline.events[0].start: timeline.events[0].start + SR // 2]
    start = int(np.argmax(np.correlate(recorded, first, mode="valid")))
    assert at - start == pytest.approx(last.start - timeline.events[0].start, abs=0.02 * SR)


def test_a_device_that_never_starts_is_reported_clearly(
        slow_server: PulseServer, slow_env: dict[str, str]) -> None:
    """A suspended sink takes the stream's first fill and never asks for more."""
    slow_server.pactl("suspend-sink", slow_server.sink_name, "1")
    try:
        with open_player() as player:
            player.start(iter([np.zeros(10 * SR, np.float32)]))
            t0 = time.monotonic()
            with pytest.raises(AudioError) as excinfo:
                player.wait(30)
            waited = time.monotonic() - t0
        assert str(excinfo.value) == DEVICE_SILENT_MESSAGE
        assert START_TIMEOUT_S - 0.5 < waited < START_TIMEOUT_S + 1.0
    finally:
        slow_server.pactl("suspend-sink", slow_server.sink_name, "0")
