"""--all-variations writes its files two at a time (voicecoach/parallel.py): the same bytes
as one at a time, progress and notices still told, and a failure or a signal in one
stops the others with no temporary file left anywhere."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_faults import spawn, temps, wait_for_temp
from voicecoach import SAMPLE_RATE, mp3, parallel
from voicecoach.audiofile import write_audio
from voicecoach.cli import cli
from voicecoach.export import _silences, export_all
from voicecoach.pipeline import prepare
from voicecoach.spec import Options, SessionSpec

ROUTINE = "mid-back-knot"
VARIATIONS = ["kneeling", "wall", "floor"]


def test_all_variations_are_the_same_bytes_as_single_exports(tmp_path: Path) -> None:
    runner = CliRunner()
    together = tmp_path / "together"
    result = runner.invoke(cli, ["export", ROUTINE, "--all-variations", "--reps", "2",
                                 "--format", "mp3", "--captions", "-o", str(together)])
    assert result.exit_code == 0, result.output
    for variation in VARIATIONS:
        alone = tmp_path / f"{variation}.mp3"
        result = runner.invoke(cli, ["export", ROUTINE, "--variation", variation, "--reps", "2",
                                     "--captions", "-o", str(alone)])
        assert result.exit_code == 0, result.output
        written = together / f"{ROUTINE}-{variation}.mp3"
        assert written.read_bytes() == alone.read_bytes(), variation
        session = prepare(ROUTINE, variation, Options(reps=2))  # made by two encoders each
        assert mp3.find_cut(session.timeline.duration_samples, _silences(session.timeline),
                            SAMPLE_RATE) is not None
        assert written.with_suffix(".vtt").read_bytes() == alone.with_suffix(".vtt").read_bytes()


def test_progress_covers_every_file_and_notices_come_in_order(tmp_path: Path) -> None:
    bars: list[tuple[int, str]] = []
    counted: list[int] = []
    threads: set[str] = set()

    @contextmanager
    def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
        bars.append((total, label))

        def update(count: int) -> None:
            threads.add(threading.current_thread().name)
            counted.append(count)

        yield update

    told: list[str] = []
    # --hold 2: no room for the halfway line, so every session has a notice to tell
    spec = SessionSpec(ROUTINE, options=Options(hold_s=2, reps=2))
    written = export_all(spec, tmp_path, "ogg", progress=progress,
                         notify=lambda session: told.append(session.timeline.variation))
    assert told == VARIATIONS
    assert [p.name for p in written] == [f"{ROUTINE}-{v}.ogg" for v in VARIATIONS] + [
        f"{ROUTINE}.m3u"]
    rendering = [(total, label) for total, label in bars if label.startswith("Rendering")]
    assert len(rendering) == 1 and rendering[0][1] == "Rendering 3 files"
    assert sum(counted) == rendering[0][0]  # every sample of every file, once
    # written two at a time (each file's second half by an encoder thread of its own)
    assert {name for name in threads if name.startswith("voicecoach_")} == {
        "voicecoach_0", "voicecoach_1"}


def test_a_failing_job_stops_the_other_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    started = threading.Event()

    def endless(stop: Callable[[], None] | None) -> list[Path]:
        def chunks() -> Iterator[np.ndarray]:
            while True:
                started.set()
                yield np.zeros(SAMPLE_RATE, np.float32)

        assert stop is not None
        write_audio(tmp_path / "endless.mp3", parallel.checked(chunks(), stop),
                    total_samples=10**9)
        return []

    def failing(stop: Callable[[], None] | None) -> list[Path]:
        started.wait(30)
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError, match="the disk went away"):
        parallel.run([endless, failing], workers=2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_all_variations_removes_every_temporary_file(tmp_path: Path,
                                                                  signum: int) -> None:
    process = spawn("export", ROUTINE, "--all-variations", "--format", "mp3", "--reps", "400",
                    "-o", str(tmp_path))
    wait_for_temp(tmp_path, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert temps(tmp_path) == []
    assert not any(name.endswith(".mp3") for name in os.listdir(tmp_path)), os.listdir(tmp_path)
