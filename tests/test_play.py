"""Live playback through a real PulseAudio server, compared with the exported file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from tests.pulse import PulseServer
from voicecoach import SAMPLE_RATE, play
from voicecoach.backends import DEVICE_LATENCY_S, OpeningPlayer
from voicecoach.history import sessions
from voicecoach.pipeline import prepare
from voicecoach.play import Coach, LeadIn
from tests.output import without_stage_lines
from tests.terminal import OnTerminal

SR = SAMPLE_RATE
SHORT = str(Path(__file__).parent / "cases" / "short.yaml")
VOICECOACH = [sys.executable, "-m", "voicecoach"]
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


class FakePlayer:
    """Stands in for the device in the control API's own tests: a position and a state."""

    def __init__(self) -> None:
        self.paused = False
        self.position_samples = 0
        self.jumps: list[int] = []

    def start(self, chunks: Iterator[np.ndarray]) -> None:
        pass

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def replace(self, chunks: Iterator[np.ndarray], position_samples: int) -> None:
        self.position_samples = position_samples
        self.jumps.append(position_samples)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The coach's clock, set by the test: now[0] is time.monotonic() inside play."""
    now = [1000.0]
    monkeypatch.setattr(play, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_played_time_is_exactly_the_time_since_the_start_less_every_pause(
        clock: list[float]) -> None:
    coach = Coach(prepare(SHORT), FakePlayer())  # type: ignore[arg-type]
    assert coach.played_s == 0.0  # not started
    coach.start()
    clock[0] += 2.5
    assert coach.played_s == 2.5
    coach.key(" ")                 # pause for 1.5 s
    clock[0] += 1.5
    assert coach.played_s == 2.5   # a pause in progress does not count either
    coach.key(" ")
    clock[0] += 3.5
    assert coach.played_s == 6.0
    coach.key(" ")                 # a second pause, of 0.25 s
    clock[0] += 0.25
    coach.key(" ")
    clock[0] += 1.0
    assert coach.played_s == 7.0


def test_keys_jump_to_step_starts(clock: list[float]) -> None:
    session = prepare(SHORT)
    starts = {s.title: s.start for s in session.timeline.sections}
    player = FakePlayer()
    coach = Coach(session, player)  # type: ignore[arg-type]
    coach.start()
    player.position_samples = starts["Second"] + SR  # a second into "Second"
    coach.key("b")                 # back to the start of this step, not the session's
    assert (player.jumps, coach.step_title()) == ([starts["Second"]], "Second")
    player.position_samples = starts["Second"]  # right at its start: stays there
    coach.key("B")
    assert player.jumps[-1] == starts["Second"]
    coach.key("n")
    assert (player.jumps[-1], coach.step_title()) == (starts["Third"], "Third")
    player.position_samples = starts["First"] + 2 * SR
    coach.key("b")
    assert player.jumps[-1] == starts["First"]
    player.position_samples = starts["Finish"] + 10
    assert not coach.quit
    coach.key("n")                 # nothing after the last step: done
    assert coach.quit and player.jumps[-1] == starts["First"]


def test_play_is_the_export_with_no_drift(pulse_server: PulseServer, tmp_path: Path) -> None:
    reference = exported(tmp_path)
    recording = pulse_server.record()
    launched = time.monotonic()
    result = subprocess.run([*VOICECOACH, "play", SHORT], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    time.sleep(0.3)
    recorded = recording.stop()
    assert result.returncode == 0, result.stderr
    assert without_stage_lines(result.stderr) == "Done.\n"
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


def test_the_lead_in_plays_while_the_session_is_prepared(pulse_server: PulseServer,
                                                          tmp_path: Path) -> None:
    """`play` opens the device first and plays the session's opening silence while the
    routine loads: it counts as the session's first samples, a longer wait plays as
    silence that does not count, and the stream is still the export, sample for sample."""
    reference = exported(tmp_path)
    recording = pulse_server.record()
    lead_in = LeadIn()
    opening = OpeningPlayer(first=iter(lead_in))
    time.sleep(1.0)  # a slow start: the lead-in has played out long before the session exists
    session = prepare(SHORT)
    assert not reference[: lead_in.samples].any() and reference[lead_in.samples:].any()
    with opening.result() as player:
        assert player.position_samples == lead_in.samples  # the wait after it did not count
        coach = Coach(session, player, lead_in=lead_in)
        coach.start()
        assert player.wait(60)
        assert player.position_samples == session.rendering.total_samples == reference.size
    time.sleep(0.2)
    recorded = recording.stop()
    lag = first_sound(recorded) - first_sound(reference)
    assert lag / SR > 1.0  # the first word came after the wait, not into it
    offsets = [offset_of(recorded, reference, e.start, lag, SR // 4) for e in session.timeline.events]
    assert max(offsets) - min(offsets) <= 0.020 * SR, offsets
    assert pulse_server.sink_inputs() == []


def test_a_lead_in_given_up_closes_the_device(pulse_server: PulseServer) -> None:
    """A routine that fails to load after the device opened: the device is released."""
    lead_in = LeadIn()
    opening = OpeningPlayer(first=iter(lead_in))
    deadline = time.monotonic() + 5
    while not pulse_server.sink_inputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pulse_server.sink_inputs()  # playing the lead-in
    lead_in.cancel()
    opening.abandon()
    assert pulse_server.sink_inputs() == []


def heard_at(recorded: np.ndarray, reference: np.ndarray, at: int, after: int) -> tuple[int, float]:
    """Where the half second of the export from sample `at` is heard, looking from
    recording sample `after` (a keypress) on for a second; and how well it matches."""
    piece = reference[at: at + SR // 2]
    lo = after - SR // 10
    window = recorded[lo: after + SR + piece.size]
    lag = lo + int(np.argmax(np.correlate(window, piece, mode="valid")))
    return lag, float(np.corrcoef(recorded[lag: lag + piece.size], piece)[0, 1])


def test_keys_pause_skip_restart_and_quit(pulse_server: PulseServer, tmp_path: Path) -> None:
    reference = exported(tmp_path)
    timeline = prepare(SHORT).timeline
    second = next(s for s in timeline.sections if s.title == "Second").start
    recording = pulse_server.record()
    coached = OnTerminal.spawn(VOICECOACH + ["play", SHORT])
    time.sleep(2.5)
    coached.type(b" ")            # pause in the middle of the first hold
    paused_at = time.monotonic()
    time.sleep(1.5)
    coached.type(b" ")            # resume
    resumed_at = time.monotonic()
    time.sleep(1.0)
    coached.type(b"n")            # skip to the next step ("Second")
    skipped_at = time.monotonic()
    time.sleep(1.5)
    coached.type(b"b")            # 1.5 s into "Second": back to its start
    restarted_at = time.monotonic()
    time.sleep(1.5)
    coached.type(b"q")
    quit_at = time.monotonic()
    status, output = coached.finish()
    recorded = recording.stop()
    assert status == 0, output
    assert "Stopped." in output and "space pause/resume" in output
    entry = sessions()[0]
    assert (entry.ended, entry.stopped_at_step) == ("stopped", "Second")
    # where it stopped is what the status line last showed (the skip put the playhead ahead
    # of the time played), not the share of time played
    shown = [int(p) for p in re.findall(r"(\d+)%", output)]
    assert entry.stopped_at_percent is not None and entry.planned_s
    assert abs(entry.stopped_at_percent - shown[-1]) <= 1
    assert entry.stopped_at_percent - 100 * entry.played_s / entry.planned_s > 5
    # the pause: silence from the keypress plus what the device already held
    # (DEVICE_LATENCY_S, 0.3 s) until well into the 1.5 s pause
    at = int(recording.seconds_since_start(paused_at) * SR)
    heard_by = at + int((DEVICE_LATENCY_S + 0.05) * SR)
    quiet = np.abs(recorded[heard_by: at + int(1.2 * SR)]) < 1e-4
    assert quiet.all()
    # the skip: "Second" starts right after the keypress, as in the export
    skip = int(recording.seconds_since_start(skipped_at) * SR)
    lag, match = heard_at(recorded, reference, second, skip)
    assert match > 0.95 and (lag - skip) / SR < 0.5
    # the restart: "Second" from its start again, not the session's start nor on as it was
    restart = int(recording.seconds_since_start(restarted_at) * SR)
    lag, match = heard_at(recorded, reference, second, restart)
    assert match > 0.95 and (lag - restart) / SR < 0.5
    # played time: from the start to the quit, less the pause. The session's sample 0 is
    # heard at `zero`; the coach started at most 0.4 s before that (the device's
    # latency), and saw each key within 0.15 s of its press.
    zero = recording.started_at + (first_sound(recorded) - first_sound(reference)) / SR
    paused = resumed_at - paused_at
    assert quit_at - zero - paused - 0.3 < entry.played_s < quit_at - zero - paused + 0.55
    assert pulse_server.sink_inputs() == []


@pytest.mark.parametrize("isig", [True, False], ids=["as-sigint", "as-a-key"])
def test_ctrl_c_stops_at_once_and_restores_the_terminal(pulse_server: PulseServer,
                                                        isig: bool) -> None:
    """Ctrl-C stops the session whether the terminal makes it SIGINT or passes it on as a
    key (ISIG off; or a terminal whose foreground process voicecoach is not)."""
    import termios

    coached = OnTerminal.spawn(VOICECOACH + ["play", SHORT])
    if not isig:
        attributes = termios.tcgetattr(coached.fd)
        attributes[3] &= ~termios.ISIG
        termios.tcsetattr(coached.fd, termios.TCSANOW, attributes)
    before = termios.tcgetattr(coached.fd)
    time.sleep(2.0)
    coached.type(b"\x03")
    status, output = coached.finish(timeout_s=30)
    assert status == 130, output
    assert "Traceback" not in output and "Interrupted." in output
    assert termios.tcgetattr(coached.fd)[3] & termios.ECHO == before[3] & termios.ECHO


@pytest.mark.parametrize("after_s", [0.3, 0.45, 0.6, 0.8])
def test_ctrl_c_while_play_starts_up(pulse_server: PulseServer, after_s: float) -> None:
    """Ctrl-C while play imports, loads and opens the device in two threads: one of them
    in ~140 hung the process for good (an import interrupted), another came out as
    "cannot read sound file" (a tone being read), before stops.py."""
    coached = OnTerminal.spawn(VOICECOACH + ["play", SHORT])
    time.sleep(after_s)
    coached.type(b"\x03")
    status, output = coached.finish(timeout_s=30)
    assert status == 130, output
    assert output.rstrip().endswith("Interrupted."), output
    assert "Traceback" not in output and "ignored" not in output, output


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
    assert (result.returncode, without_stage_lines(result.stderr)) == (0, "Done.\n")
    assert not (tmp_path / "history.sqlite3").exists()
    garbage = b"this is not a database" * 100
    (tmp_path / "history.sqlite3").write_bytes(garbage)
    result = subprocess.run(quick, stdin=subprocess.DEVNULL, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    lines = without_stage_lines(result.stderr).splitlines()
    assert lines[0] == "Done."
    assert lines[1].startswith("Warning: could not save this session to the history: ")
    assert len(lines) == 2
    assert (tmp_path / "history.sqlite3").read_bytes() == garbage
