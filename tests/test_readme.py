"""The README, walked as a new user would: every command in its code blocks, in order,
with the environment activated as it says, in a fresh folder.

The two first commands (setup, and the test suite itself) are what CI runs, and `pip
install` reaches the network; those are the only lines not run here. A `play` is
started against a real sound server and stopped with Ctrl-C after its first seconds (a
whole session lasts minutes; test_play.py plays whole ones). A `serve` runs on any free
port (`--port 0`: 8000 may be taken), answers its page at the address it prints, and is
stopped with Ctrl-C (test_serve.py drives the page in a browser). `--forget` is answered yes.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.pulse import PulseServer

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
NOT_RUN = ("bash scripts/", "pip install", "source .venv/bin/activate")


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = shlex.join(shlex.split(line, comments=True))
            if command and not command.startswith(NOT_RUN):
                lines.append(command)
    return lines


def test_the_readme_starts_with_its_two_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip() == ("bash scripts/setup.sh && .venv/bin/voicecoach export mid-back-knot "
                                 "-o mid-back-knot.mp3")
    assert blocks[1].strip() == "bash scripts/test.sh"
    assert "source .venv/bin/activate" in blocks[2]


@pytest.mark.sound
def test_every_readme_command_works_in_order(pulse_server: PulseServer, tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) > 20
    # the files the commands name: a routine of one's own, from the README's own example
    routine = re.findall(r"```yaml\n(.*?)```", README, re.S)[0]
    (tmp_path / "my-routine.yaml").write_text(routine)
    music = tmp_path / "music"  # and a folder of music, for --music
    music.mkdir()
    tone = np.sin(2 * np.pi * 220 * np.arange(3 * 44100) / 44100).astype(np.float32) * 0.3
    soundfile.write(music / "calm.ogg", tone, 44100)
    soundfile.write(music / "walk.mp3", tone[::-1].copy(), 44100)
    bin_dir = Path(sys.executable).parent  # the activated environment's commands
    env = {**os.environ, **pulse_server.env, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "VOICECOACH_DATA_DIR": str(tmp_path / "data")}
    for command in commands:
        argv = shlex.split(command)
        output = None
        if ">" in argv:
            at = argv.index(">")
            output, argv = tmp_path / argv[at + 1], argv[:at]
        assert argv[0] == "voicecoach", command
        if argv[1] == "play":
            process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                process.wait(timeout=6)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
            assert process.returncode == 130, (command, err)
            assert err.endswith("Interrupted.\n"), (command, err)
            continue
        if argv[1] == "serve":
            serve_briefly(argv + ["--port", "0"], tmp_path, env)
            continue
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                input="y\n", timeout=600)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
        if output is not None:
            output.write_text(result.stdout)
    assert (tmp_path / "mid-back.mp3").stat().st_size > 100_000
    assert (tmp_path / "upper.vtt").exists()
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == [
        "mid-back-knot-floor.mp3", "mid-back-knot-kneeling.mp3", "mid-back-knot-wall.mp3",
        "mid-back-knot.m3u"]
    assert (tmp_path / "routine.schema.json").read_text().startswith("{")
    assert (tmp_path / "sessions.csv").read_text().startswith("id,routine,")


def serve_briefly(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Start a server, open the page at the address it printed, then Ctrl-C."""
    import urllib.request

    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("voicecoach is at http://"), (argv, first)
        with urllib.request.urlopen(first.split()[-1], timeout=60) as page:
            assert b"<title>voicecoach</title>" in page.read()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, (argv, err)
    assert err == "Interrupted.\n", (argv, err)
