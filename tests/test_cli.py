"""The CLI: exact messages and exit codes for what a person can get wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicecoach.cli import cli
from tests.output import without_stage_lines

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.usefixtures("in_repo")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_unknown_routine_is_one_line_exit_2() -> None:
    code, out, err = run("show", "mid-bak-knot")
    assert (code, out) == (2, "")
    assert err == (
        "Error: unknown routine 'mid-bak-knot': did you mean 'mid-back-knot'? bundled routines: "
        "mid-back-knot, upper-back-knot (or give a path to a .yaml file)\n"
    )


def test_unknown_variation_is_one_line_exit_2() -> None:
    code, _, err = run("show", "mid-back-knot", "--variation", "sitting")
    assert code == 2
    assert err == "Error: unknown variation 'sitting' for mid-back-knot: valid: kneeling, wall, floor\n"


def test_bad_routine_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("title: T\nsteps:\n  - name: A\n    hold: soon\n    hodl: 3\n")
    code, _, err = run("validate", str(path))
    assert code == 2
    assert err == (
        f"{path}:4:11: steps[0].hold: expected seconds or a range like 20-30, got 'soon'\n"
        f"{path}:5:5: steps[0].hodl: unknown key 'hodl'; did you mean 'hold'? (allowed: after, announce, "
        "between, count, during, get_ready, hold, milestones, name, only, repeat, reps, rest, say, sets, "
        "sides, switch, tempo)\n"
    )
    code, _, err2 = run("show", str(path))
    assert (code, err2) == (2, err)


def test_validate_good_files() -> None:
    code, out, _ = run("validate", "voicecoach/routines/mid-back-knot.yaml")
    assert (code, out) == (0, "voicecoach/routines/mid-back-knot.yaml: ok\n")


def test_show_json_contract() -> None:
    code, out, _ = run("show", "upper-back-knot", "--json", "--level", "low")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"routine", "variation", "duration", "sample_rate", "events", "notices", "spans",
                         "voice"}
    assert (data["routine"], data["variation"], data["sample_rate"]) == ("upper-back-knot", "standard", 22050)
    starts = [e["start"] for e in data["events"]]
    assert starts == sorted(starts)
    for e in data["events"]:
        assert set(e) == {"kind", "start", "end", "step", "text" if e["kind"] == "speech" else "tone"}
        assert 0 <= e["start"] < e["end"] <= data["duration"]
    first_hold = next(e for e in data["events"] if e.get("tone") == "hold_start")
    first_end = next(e for e in data["events"] if e.get("tone") == "hold_end")
    assert first_end["start"] - first_hold["start"] == pytest.approx(20.0, abs=1e-6)


def test_show_table() -> None:
    code, out, _ = run("show", "mid-back-knot", "--variation", "floor", "--reps", "2")
    assert code == 0
    lines = out.splitlines()
    assert re.fullmatch(r"Mid-back knot \(floor\), \d+:\d\d\.\d", lines[0])
    assert re.fullmatch(r"\s*0:00\.\d  Introduction\s+Mid-back knot\.", lines[1])
    assert any("[switch tone]" in line for line in lines)


def test_list_shows_routines_variations_and_lengths() -> None:
    code, out, _ = run("list")
    assert code == 0
    assert re.search(r"^mid-back-knot: Mid-back knot\n(  \S.*\n)+  kneeling \(default\): Kneeling with a "
                     r"foam roller, \d+:\d\d\n  wall: Standing, with the foam roller on a wall, \d+:\d\d\n",
                     out, re.MULTILINE)
    assert re.search(r"upper-back-knot: Upper-back knot\n(  \S.*\n)+  standard \(default\): Standard, ", out)


def test_schema_is_json_schema() -> None:
    import jsonschema
    import yaml

    _, out, _ = run("schema")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    routine = yaml.safe_load(Path("voicecoach/routines/mid-back-knot.yaml").read_text())
    jsonschema.validate(routine, schema)


def test_bad_option_values_are_usage_errors() -> None:
    code, _, err = run("show", "mid-back-knot", "--hold", "-3")
    assert code == 2 and "Invalid value for '--hold'" in err
    code, _, err = run("show", "mid-back-knot", "--level", "extreme")
    assert code == 2 and "Invalid value for '--level'" in err


def test_every_command_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    for name, command in cli.commands.items():
        assert f"voicecoach {name}" in readme, name
        assert "Example:" in (command.help or ""), name


def test_help_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from voicecoach.cli import cli; "
        "import contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): cli(['--help'])\n"
        "print(sorted(m for m in ('numpy', 'scipy', 'sounddevice', 'soundfile', 'yaml', 'jsonschema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("seconds", "tenths", "shown"), [
    (359.96, True, "6:00.0"), (359.96, False, "6:00"), (13585.0, True, "3:46:25.0"),
    (3600.0, False, "1:00:00"), (5.04, True, "0:05.0"), (61.5, False, "1:02"),
])
def test_one_clock_for_every_time_shown(seconds: float, tenths: bool, shown: str) -> None:
    from voicecoach.cli_common import clock

    assert clock(seconds, tenths=tenths) == shown


def test_format_applies_without_all_variations_or_is_refused(tmp_path: Path) -> None:
    code, _, err = run("export", "mid-back-knot", "--format", "ogg", "-o", str(tmp_path / "x.mp3"))
    assert (code, err) == (2, f"Error: --format ogg does not match '{tmp_path / 'x.mp3'}': give -o a "
                              ".ogg name, or leave --format out (the extension decides)\n")
    code, out, _ = run("export", "mid-back-knot", "--format", "wav", "-o", str(tmp_path))
    assert (code, out) == (0, f"Wrote {tmp_path / 'mid-back-knot-kneeling.wav'}\n")


def test_all_variations_makes_its_folder_and_refuses_a_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "sessions" / "week1"
    code, out, err = run("export", "upper-back-knot", "--all-variations", "--format", "wav",
                         "-o", f"{folder}/")
    assert (code, without_stage_lines(err)) == (0, "")
    assert sorted(p.name for p in folder.iterdir()) == ["upper-back-knot-standard.wav",
                                                        "upper-back-knot.m3u"]
    code, _, err = run("export", "upper-back-knot", "--all-variations", "-o", str(tmp_path / "one.mp3"))
    assert (code, err) == (2, f"Error: --all-variations writes one file per variation into a folder: "
                              f"give -o a folder, not '{tmp_path / 'one.mp3'}' (--format picks the "
                              "file type)\n")
    assert not (tmp_path / "one.mp3").exists()


def test_a_single_export_makes_its_folder(tmp_path: Path) -> None:
    code, out, _ = run("export", "upper-back-knot", "-o", f"{tmp_path}/new/", "--format", "wav")
    assert (code, out) == (0, f"Wrote {tmp_path / 'new' / 'upper-back-knot-standard.wav'}\n")
    code, out, _ = run("export", "upper-back-knot", "-o", str(tmp_path / "a" / "b.wav"))
    assert (code, out) == (0, f"Wrote {tmp_path / 'a' / 'b.wav'}\n")
    (tmp_path / "file").write_text("x")
    code, _, err = run("export", "upper-back-knot", "-o", str(tmp_path / "file" / "b.wav"))
    assert code == 1
    assert err == f"Error: cannot write into '{tmp_path / 'file'}': it is a file, not a folder\n"


def test_variation_names_match_in_any_case() -> None:
    code, out, _ = run("show", "mid-back-knot", "--variation", "Wall")
    assert code == 0
    assert out.startswith("Mid-back knot (wall), ")


def test_list_shows_descriptions() -> None:
    code, out, _ = run("list")
    assert code == 0
    assert "  Build strength between the shoulder blades" in out
    assert "  kneeling (default): Kneeling with a foam roller, " in out


def test_show_into_a_closed_pipe_exits_quietly() -> None:
    import subprocess
    import sys

    result = subprocess.run(f"{sys.executable} -m voicecoach show mid-back-knot | head -1",
                            shell=True, capture_output=True, text=True, executable="/bin/bash",
                            env={**__import__("os").environ, "PYTHONWARNINGS": ""})
    assert result.stdout.startswith("Mid-back knot (kneeling)")
    assert result.stderr == ""
    piped = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m voicecoach "
                            "show mid-back-knot | head -1 >/dev/null"], capture_output=True)
    assert piped.returncode == 0


def test_the_first_chapter_starts_at_the_start() -> None:
    from voicecoach.pipeline import prepare

    sections = prepare("upper-back-knot").timeline.sections
    assert sections[0].start == 0
    assert all(a.end == b.start for a, b in zip(sections, sections[1:], strict=False))


def test_a_variation_suggestion_only_when_it_is_close(tmp_path: Path) -> None:
    routine = tmp_path / "neck.yaml"
    routine.write_text("title: Neck\nvariations:\n  seated: {title: Seated, default: true}\n"
                       "  standing: {title: Standing}\nsteps:\n  - name: A\n    hold: 5\n")
    code, _, err = run("show", str(routine), "--variation", "sitting")
    assert (code, err) == (2, "Error: unknown variation 'sitting' for neck: valid: seated, standing\n")
    code, _, err = run("show", "mid-back-knot", "--variation", "kneel")
    assert "did you mean 'kneeling'?" in err


def test_a_long_stage_says_so_where_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    """A cold synthesis in the natural voice takes seconds (the model loads, then every
    phrase): a log or a pipe gets one line for it (a terminal gets a progress bar); the
    export itself is as always."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VOICECOACH_CACHE_DIR": str(tmp_path / "cold"),
           "VOICECOACH_ENGINE": "piper"}
    out = tmp_path / "m.wav"
    result = subprocess.run([sys.executable, "-m", "voicecoach", "export", "upper-back-knot",
                             "-o", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "Synthesizing speech..."
    assert without_stage_lines(result.stderr) == ""
    assert result.stdout == f"Wrote {out}\n" and out.stat().st_size > 0
