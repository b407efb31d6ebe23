"""Live playback through a real PulseAudio server, compared with the exported file."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.pulse import PulseServer
from voicecoach import SAMPLE_RATE
from voicecoach.backends import DEVICE_LATENCY_S
from voicecoach.history import sessions
from voicecoach.pipeline import prepare

SR = SAMPLE_RATE
SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
VOICECOACH = [sys.executable, "-m", "voicecoach.cli"]
pytestmark = pytest.mark.sound


def exported(tmp_path: Path) -> np.ndarray:
    out = tmp_path / "short.wav"
    subprocess.run([*VOICECOACH, "export", SHORT, "-o", str(out)], check=True, capture_output=True)
    samples, _ = soundfile.read(out, dtype="float32")
    return samples  # type: ignore[no-any-return]


def offset_of(recording: np.ndarray, reference: np.ndarray, at: int, guess: int, search: int) -> int:
    """Where reference[at: at + 0.5 s] appears in the recording (near at + guess), minus `at`."""
    piece = reference[at: at + SR // 2]
    lo = max(0, at + guess - search)
    window = recording[lo: at + guess + search + piece.size]
    scores = np.correlate(window, piece, mode="valid")
    return lo + int(np.argmax(scores)) - at


def first_sound(samples: np.ndarray) -> int:
    return int(np.flatnonzero(np.abs(samples) > 0.01)[0])


def test_play_is_the_export_with_no_drift(pulse_server: PulseServer, tmp_path: Path) -> None:
    reference = exported(tmp_path)
    recording = pulse_server.record()
    launched = time.monotonic()
    result = subprocess.run([*VOICECOACH, "play", SHORT], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    time.sleep(0.3)
    recorded = recording.stop()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "Done.\n"
    entry = sessions()[0]
    assert (entry.routine_id, entry.routine_title, entry.variation, entry.level, entry.ended) == (
        "short", "Short test", "standard", "middle", "completed")
    assert entry.stopped_at_step is None
    assert entry.planned_s == pytest.approx(prepare(SHORT).timeline.duration_s)
    start = first_sound(reference)
    lag = first_sound(recorded) - start  # where the session's sample 0 lies in the recording
    assert recording.seconds_since_start(launched) < lag / SR < recording.seconds_since_start(launched) + 5
    timeline = prepare(SHORT).timeline
    points = [e.start for e in timeline.events]
    offsets = [offset_of(recorded, reference, p, lag, SR // 4) for p in points]
    assert max(offsets) - min(offsets) <= 0.020 * SR, offsets
    # the whole session came out, nothing cut at the end
    tail = reference[timeline.events[-1].start: timeline.events[-1].end]
    end = timeline.events[-1].start + lag
    assert np.corrcoef(recorded[end: end + tail.size], tail)[0, 1] > 0.95
    assert pulse_server.sink_inputs() == []


def spawn_on_pty(args: list[str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        # a test run started in the background inherits SIGINT ignored; a person's shell doesn't
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvp(args[0], args)
    return pid, fd


def read_all(fd: int) -> str:
    out = b""
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out.decode(errors="replace")


def test_keys_pause_skip_and_quit(pulse_server: PulseServer, tmp_path: Path) -> None:
    reference = exported(tmp_path)
    timeline = prepare(SHORT).timeline
    second = next(s for s in timeline.sections if s.title == "Second").start
    recording = pulse_server.record()
    pid, fd = spawn_on_pty(VOICECOACH + ["play", SHORT])
    time.sleep(2.5)
    os.write(fd, b" ")            # pause in the middle of the first hold
    paused_at = time.monotonic()
    time.sleep(1.5)
    os.write(fd, b" ")            # resume
    time.sleep(1.0)
    os.write(fd, b"n")            # skip to the next step ("Second")
    skipped_at = time.monotonic()
    time.sleep(2.5)
    os.write(fd, b"q")
    _, status = os.waitpid(pid, 0)
    output = read_all(fd)
    recorded = recording.stop()
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert "Stopped." in output and "space pause/resume" in output
    entry = sessions()[0]
    assert (entry.ended, entry.stopped_at_step) == ("stopped", "Second")
    assert 4.0 < entry.played_s < 8.0  # about 7.5 s of wall time less the 1.5 s pause
    # the pause: silence from the keypress plus what the device already held
    # (DEVICE_LATENCY_S, 0.3 s) until well into the 1.5 s pause
    at = int(recording.seconds_since_start(paused_at) * SR)
    heard_by = at + int((DEVICE_LATENCY_S + 0.05) * SR)
    quiet = np.abs(recorded[heard_by: at + int(1.2 * SR)]) < 1e-4
    assert quiet.all()
    # the skip: "Second" starts right after the keypress, as in the export
    skip = int(recording.seconds_since_start(skipped_at) * SR)
    piece = reference[second: second + SR // 2]
    window = recorded[skip - SR // 10: skip + SR]
    lag = int(np.argmax(np.correlate(window, piece, mode="valid"))) + skip - SR // 10
    assert np.corrcoef(recorded[lag: lag + piece.size], piece)[0, 1] > 0.95
    assert (lag - skip) / SR < 0.5
    assert pulse_server.sink_inputs() == []


def test_ctrl_c_stops_at_once_and_restores_the_terminal(pulse_server: PulseServer) -> None:
    import termios

    pid, fd = spawn_on_pty(VOICECOACH + ["play", SHORT])
    before = termios.tcgetattr(fd)
    time.sleep(2.0)
    os.write(fd, b"\x03")
    _, status = os.waitpid(pid, 0)
    output = read_all(fd)
    assert os.waitstatus_to_exitcode(status) == 130, output
    assert "Traceback" not in output and "Interrupted." in output
    assert termios.tcgetattr(fd)[3] & termios.ECHO == before[3] & termios.ECHO


def test_no_sound_server_points_to_export(tmp_path: Path) -> None:
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path}/nothing", "ALSA_CONFIG_PATH": "/dev/null"}
    result = subprocess.run([*VOICECOACH, "play", SHORT], stdin=subprocess.DEVNULL, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("Error: no audio device or sound server found; use `voicecoach export` "
                             "to write an audio file instead\n")


def test_no_log_and_a_damaged_history_never_stop_a_session(pulse_server: PulseServer, tmp_path: Path) -> None:
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    quick = [*VOICECOACH, "play", SHORT, "--reps", "1", "--hold", "3"]
    result = subprocess.run([*quick, "--no-log"], stdin=subprocess.DEVNULL, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (0, "Done.\n")
    assert not (tmp_path / "history.sqlite3").exists()
    garbage = b"this is not a database" * 100
    (tmp_path / "history.sqlite3").write_bytes(garbage)
    result = subprocess.run(quick, stdin=subprocess.DEVNULL, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines[0] == "Done."
    assert lines[1].startswith("Warning: could not save this session to the history: ")
    assert len(lines) == 2
    assert (tmp_path / "history.sqlite3").read_bytes() == garbage
