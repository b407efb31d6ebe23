"""The session history: real SQLite files in temporary folders, faults included.

Old, damaged, foreign and newer files are built here byte for byte as they would be
found on a person's disk, then handed to the current code.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicecoach import history, history_cli
from voicecoach.history import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    HistoryError,
    SessionEntry,
    Target,
    forget,
    progress_phrase,
    record,
    sessions,
    summarize,
)
from voicecoach.model import Range

# What the first release wrote (history version 1), frozen here as it shipped.
V1_DDL = """
PRAGMA application_id = 1449347177;  -- "VcHi"
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    routine_id TEXT NOT NULL,
    routine_title TEXT NOT NULL,
    variation TEXT NOT NULL,
    level TEXT NOT NULL,
    started_at TEXT NOT NULL,
    played_s REAL NOT NULL CHECK (played_s >= 0),
    ended TEXT NOT NULL CHECK (ended IN ('completed', 'stopped')),
    stopped_at_step TEXT
);
PRAGMA user_version = 1;
"""

NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)  # a Wednesday; ISO week 2024-W19 starts Mon 6 May
PLUS2 = timezone(timedelta(hours=2))


def entry(when: datetime, routine: str = "mid-back-knot", *, played_s: float = 720.0,
          ended: str = "completed", step: str | None = None, variation: str = "kneeling",
          level: str = "middle", planned_s: float | None = 730.0,
          title: str = "Mid-back knot", percent: float | None = None,
          target: Target | None = None) -> SessionEntry:
    return SessionEntry(routine, title, variation, level, when, played_s, ended,  # type: ignore[arg-type]
                        step, planned_s, percent, target)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --- recording and reading ---------------------------------------------------------------------

def test_record_creates_the_current_schema_and_reads_back_newest_first(db: Path) -> None:
    assert sessions(db_path=db) == [] and not db.exists()  # reading creates nothing
    first = entry(utc("2024-05-07T06:30:00"))
    second = entry(utc("2024-05-08T06:30:00"), ended="stopped", step="Wall angels", played_s=99.5)
    assert record(first, db) is None
    assert record(second, db) is None
    got = sessions(db_path=db)
    assert [e.id for e in got] == [2, 1]
    assert got[0] == SessionEntry("mid-back-knot", "Mid-back knot", "kneeling", "middle",
                                  utc("2024-05-08T06:30:00"), 99.5, "stopped", "Wall angels",
                                  730.0, id=2)
    assert raw(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(3,)]
    assert raw(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert raw(db, "PRAGMA journal_mode") == [("wal",)]
    assert raw(db, "SELECT started_at FROM sessions ORDER BY id") == [
        ("2024-05-07T06:30:00+00:00",), ("2024-05-08T06:30:00+00:00",)]
    assert ("sessions_by_routine",) in raw(db, "SELECT name FROM sqlite_master WHERE type='index'")


def test_start_times_are_stored_in_utc_whatever_the_zone(db: Path) -> None:
    record(entry(datetime(2024, 5, 8, 9, 15, 30, tzinfo=PLUS2)), db)
    assert raw(db, "SELECT started_at FROM sessions") == [("2024-05-08T07:15:30+00:00",)]


def test_an_entry_without_a_time_zone_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        entry(datetime(2024, 5, 8, 9, 0))
    with pytest.raises(ValueError, match="ended"):
        entry(NOW, ended="finished")


def test_routine_filter_and_forget_one_routine(db: Path) -> None:
    record(entry(NOW), db)
    record(entry(NOW, "neck", title="Neck release"), db)
    assert [e.routine_id for e in sessions("neck", db)] == ["neck"]
    assert forget("neck", db) == 1
    assert [e.routine_id for e in sessions(db_path=db)] == ["mid-back-knot"]
    assert forget(db_path=db) == 1
    assert sessions(db_path=db) == []
    assert forget(db_path=db.parent / "none.sqlite3") == 0


def test_forgotten_sessions_are_gone_from_the_file(db: Path) -> None:
    record(entry(NOW, "kept"), db)
    record(entry(NOW, "private-thing", title="Private title"), db)
    assert forget("private-thing", db) == 1
    leftovers = b"".join(p.read_bytes() for p in db.parent.iterdir())
    assert b"private-thing" not in leftovers and b"Private title" not in leftovers
    assert [e.routine_id for e in sessions(db_path=db)] == ["kept"]


def test_an_empty_file_is_an_empty_history(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.touch()
    assert sessions(db_path=db) == []
    assert record(entry(NOW), db) is None
    assert len(sessions(db_path=db)) == 1


def test_unwritable_data_folder_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / "file" / "history.sqlite3"
    warning = record(entry(NOW), path)
    assert warning is not None and warning.startswith("could not save this session to the history: ")
    assert str(path) in warning and "\n" not in warning


def test_default_path_follows_voicecoach_data_dir(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICECOACH_DATA_DIR", str(tmp_path / "d"))
    assert history.default_db_path() == tmp_path / "d" / "history.sqlite3"
    assert record(entry(NOW)) is None
    assert len(sessions()) == 1


# --- migrations --------------------------------------------------------------------------------

def make_v1(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(V1_DDL)
    con.execute("PRAGMA journal_mode = WAL")
    for i in range(rows):
        con.execute(
            "INSERT INTO sessions (routine_id, routine_title, variation, level, started_at, "
            "played_s, ended, stopped_at_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("mid-back-knot", "Mid-back knot", "floor", "low", f"2024-05-0{i + 1}T07:00:00+00:00",
             600.0 + i, "stopped" if i == 1 else "completed", "Wall angels" if i == 1 else None))
    con.commit()
    con.close()


@pytest.mark.parametrize("first_touch", ["read", "record"])
def test_a_version_1_file_is_upgraded_with_every_row_intact(db: Path, first_touch: str) -> None:
    make_v1(db)
    before = raw(db, "SELECT * FROM sessions ORDER BY id")
    if first_touch == "read":
        assert len(sessions(db_path=db)) == 3
    else:
        assert record(entry(NOW), db) is None
    assert raw(db, "PRAGMA user_version") == [(3,)]
    assert raw(db, "SELECT id, routine_id, routine_title, variation, level, started_at, played_s, "
                   "ended, stopped_at_step FROM sessions WHERE id <= 3 ORDER BY id") == before
    assert raw(db, "SELECT planned_s, stopped_at_percent, target_low, target_high FROM sessions "
                   "WHERE id <= 3") == [(None, None, None, None)] * 3
    assert ("sessions_by_routine",) in raw(db, "SELECT name FROM sqlite_master WHERE type='index'")
    old = sessions(db_path=db)[-1]
    assert (old.id, old.started_at, old.played_s, old.planned_s) == (
        1, utc("2024-05-01T07:00:00"), 600.0, None)
    assert sessions(db_path=db)[-2].stopped_at_step == "Wall angels"


def test_a_failing_migration_changes_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record(entry(NOW), db)

    def broken_v4(con: sqlite3.Connection) -> None:
        con.execute("ALTER TABLE sessions ADD COLUMN mood TEXT")
        con.execute("SELECT no_such_column FROM sessions")

    monkeypatch.setattr(history, "MIGRATIONS", (*history.MIGRATIONS, broken_v4))
    monkeypatch.setattr(history, "SCHEMA_VERSION", 4)
    warning = record(entry(NOW), db)
    assert warning == (f"could not save this session to the history: {db}: "
                       "no such column: no_such_column")
    monkeypatch.undo()
    assert raw(db, "PRAGMA user_version") == [(3,)]
    assert "mood" not in [c[1] for c in raw(db, "PRAGMA table_info(sessions)")]
    assert len(sessions(db_path=db)) == 1


# --- faults: damaged, foreign, newer, full, concurrent -----------------------------------------

def not_ours(path: Path) -> str:
    return (f"{path} is not a voicecoach history database (damaged, or another program's file); "
            "it was left as it is: move it aside to start a new history")


def newer(path: Path, version: int = 4) -> str:
    return (f"{path} was written by a newer voicecoach (history version {version}; this one "
            "knows up to 3); it was left as it is: upgrade voicecoach to add to it")


@pytest.mark.parametrize("content", [
    b"\x00garbage\xff" * 500,
    b"SQLite format 3\x00" + b"\xff" * 5000,  # the right magic, then garbage
    b"SQLite format 3",                        # cut short
])
def test_a_damaged_file_is_reported_and_left_byte_for_byte(db: Path, content: bytes) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(content)
    warning = record(entry(NOW), db)
    assert warning == f"could not save this session to the history: {not_ours(db)}"
    with pytest.raises(HistoryError) as caught:
        sessions(db_path=db)
    assert str(caught.value) == not_ours(db)
    with pytest.raises(HistoryError):
        forget(db_path=db)
    assert progress_phrase("mid-back-knot", NOW, db) is None
    assert db.read_bytes() == content
    assert siblings(db) == ["history.sqlite3"]  # no -wal or -shm beside it either


@pytest.mark.parametrize("setup", [
    "PRAGMA application_id = 42; CREATE TABLE t (x)",
    "CREATE TABLE photos (x); PRAGMA user_version = 1",
    "CREATE TABLE sessions (x)",
])
def test_another_programs_database_is_not_adopted(db: Path, setup: str) -> None:
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.executescript(setup)
    con.close()
    content = db.read_bytes()
    assert record(entry(NOW), db) == f"could not save this session to the history: {not_ours(db)}"
    with pytest.raises(HistoryError) as caught:
        sessions(db_path=db)
    assert str(caught.value) == not_ours(db)
    assert db.read_bytes() == content


def make_newer(path: Path, journal_mode: str, compatible: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA journal_mode = {journal_mode}")
    con.executescript(V1_DDL)
    con.execute("ALTER TABLE sessions ADD COLUMN planned_s REAL")
    for column in ("stopped_at_percent", "target_low", "target_high", "heart_rate"):
        con.execute(f"ALTER TABLE sessions ADD COLUMN {column} REAL")
    if not compatible:
        con.execute("ALTER TABLE sessions RENAME COLUMN played_s TO played_ms")
    con.execute("INSERT INTO sessions VALUES (1, 'mid-back-knot', 'Mid-back knot', 'wall', "
                "'high', '2024-05-07T06:30:00+00:00', 700.0, 'completed', NULL, 710.0, NULL, 3, 4, "
                "61.5)")
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_newer_file_is_never_written_but_can_be_read(db: Path, journal_mode: str) -> None:
    make_newer(db, journal_mode)
    content = db.read_bytes()
    assert record(entry(NOW), db) == f"could not save this session to the history: {newer(db)}"
    with pytest.raises(HistoryError) as caught:
        forget(db_path=db)
    assert str(caught.value) == newer(db)
    got = sessions(db_path=db)  # read-only: what this version understands of it
    assert [(e.id, e.variation, e.played_s, e.planned_s) for e in got] == [(1, "wall", 700.0, 710.0)]
    assert progress_phrase("mid-back-knot", NOW, db) == "This is your second session this week."
    assert db.read_bytes() == content
    assert raw(db, "PRAGMA user_version") == [(4,)]


def test_a_newer_file_that_no_longer_reads_is_refused(db: Path) -> None:
    make_newer(db, "delete", compatible=False)
    content = db.read_bytes()
    with pytest.raises(HistoryError) as caught:
        sessions(db_path=db)
    assert str(caught.value) == newer(db)
    assert db.read_bytes() == content


def test_a_full_disk_is_one_line_and_keeps_every_earlier_session(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_FULL for real: the connection may not grow the file past its current size."""
    assert record(entry(NOW), db) is None
    connect = history._connect

    def no_room(path: Path) -> sqlite3.Connection:
        con = connect(path)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages}")
        return con

    monkeypatch.setattr(history, "_connect", no_room)
    saved, warning = 1, None
    for _ in range(500):
        warning = record(entry(NOW, title="A long title " * 40), db)
        if warning:
            break
        saved += 1
    assert warning == f"could not save this session to the history: {db}: the disk is full"
    assert saved > 1  # the free space there was got used first
    monkeypatch.undo()
    assert len(sessions(db_path=db)) == saved
    assert raw(db, "PRAGMA integrity_check") == [("ok",)]
    assert record(entry(NOW), db) is None  # room again: recording carries on
    assert len(sessions(db_path=db)) == saved + 1


WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from voicecoach.history import HistoryError, SessionEntry, record, sessions
tag, per = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
for line in sys.stdin:  # one brand-new history per line: its path
    db = Path(line.strip())
    problems = []
    try:  # reading while the others create it: empty or partial, never refused
        sessions(db_path=db)
    except HistoryError as e:
        problems.append(f"read before: {e}")
    for i in range(per):
        warning = record(SessionEntry(tag, tag, "v", "middle", datetime.now(UTC), i,
                                      "completed"), db)
        if warning:
            problems.append(warning)
    try:
        mine = [e for e in sessions(tag, db) if e.routine_id == tag]
        if len(mine) != per - sum("could not save" in p for p in problems):
            problems.append(f"read {len(mine)} of my sessions back")
    except HistoryError as e:
        problems.append(f"read after: {e}")
    print(repr(problems), flush=True)
"""


def hammer(root: Path, writers: int, rounds: int, per: int) -> tuple[list[str], list[Path]]:
    """`writers` real processes, each recording `per` sessions into the same brand-new
    history, `rounds` times over; every round starts them together and waits for all.
    Returns the problems reported (as "round N: ...") and the files written."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"w{j}", str(per)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for j in range(writers)]
    problems: list[str] = []
    files = []
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for r in range(rounds):
            path = root / f"round{r}" / "history.sqlite3"
            files.append(path)
            for p in procs:  # all at once: each is blocked reading its stdin
                assert p.stdin is not None
                p.stdin.write(f"{path}\n")
                p.stdin.flush()
            for p in procs:
                assert p.stdout is not None
                problems += [f"round {r}: {x}" for x in eval(p.stdout.readline())]
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
            assert p.stdout is not None
            p.stdout.close()
    assert [p.returncode for p in procs] == [0] * writers
    return problems, files


def test_writers_creating_a_new_history_at_once_all_land(tmp_path: Path) -> None:
    """The race: a process creating a history at the same moment as another read the
    version (0, nothing yet) and the tables (the other's, just committed) in two
    snapshots, and refused the file as not a voicecoach history, when recording and when
    reading. Before the fix 24 of 500 rounds of 6 writers failed (20 of 500 with 2), so
    these 120 rounds passed by chance about once in 400 runs; after it, none of 3000."""
    writers, rounds, per = 6, 120, 2
    problems, files = hammer(tmp_path, writers, rounds, per)
    assert problems == []
    for path in files:
        assert raw(path, "SELECT routine_id, count(*) FROM sessions GROUP BY routine_id "
                         "ORDER BY routine_id") == [(f"w{j}", per) for j in range(writers)]
        assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert raw(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_header_caught_mid_rewrite_is_read_again(db: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The header is read without a lock; a checkpoint rewriting the first page in place
    can be caught halfway (measured on ext4: 86 torn reads in 2 million against a page
    rewritten in a loop): the new version beside the old application id. That read is
    taken again, while a foreign header, the same at every read, is still refused."""
    assert record(entry(NOW), db) is None
    whole = db.read_bytes()[:100]
    torn = whole[:68] + bytes(4) + whole[72:]  # version 2 written, application id not yet
    reads = [torn, whole]
    monkeypatch.setattr(history, "_read_head", lambda _path: reads.pop(0))
    assert history._header_version(db) == SCHEMA_VERSION and reads == []
    foreign = [torn] * 3
    monkeypatch.setattr(history, "_read_head", lambda _path: foreign.pop(0))
    with pytest.raises(HistoryError, match="not a voicecoach history"):
        history._header_version(db)
    assert len(foreign) == 1  # believed at the second identical read


def test_two_sessions_ending_at_once_both_land(tmp_path: Path) -> None:
    """Two processes, 50 writes each, into one file that does not exist yet."""
    problems, files = hammer(tmp_path, 2, 1, 50)
    assert problems == []
    assert raw(files[0], "SELECT routine_id, count(*), count(DISTINCT played_s) FROM sessions "
                         "GROUP BY routine_id") == [("w0", 50, 50), ("w1", 50, 50)]
    assert raw(files[0], "PRAGMA integrity_check") == [("ok",)]


# --- weeks, targets, streaks -------------------------------------------------------------------

def weeks_of(*counts: int, start: str = "2024-04-15") -> list[SessionEntry]:
    """`counts[i]` sessions on the Monday (UTC) of week i from `start`."""
    first = utc(f"{start}T07:00:00")
    return [entry(first + timedelta(weeks=i, hours=n)) for i, c in enumerate(counts)
            for n in range(c)]


THREE_TO_FOUR = Target(3, 4)


def test_target_from_the_routine_dosage() -> None:
    assert Target.from_amount(Range(3, 4)) == THREE_TO_FOUR
    assert Target.from_amount(14.0) == Target(14, 14)
    assert Target.from_amount(None) is None
    assert (str(THREE_TO_FOUR), str(Target(14, 14)), str(Target(2.5, 3))) == ("3-4", "14", "2.5-3")


def test_weekly_counts_and_a_streak_the_unfinished_week_does_not_break() -> None:
    # weeks of 15 Apr, 22 Apr, 29 Apr, 6 May (this one, not over yet)
    summary = summarize(weeks_of(1, 3, 4, 2), "mid-back-knot", "Mid-back knot", THREE_TO_FOUR,
                        NOW, weeks=4, tz=UTC)
    assert [(w.start.isoformat(), w.sessions, w.on_target, w.current) for w in summary.weeks] == [
        ("2024-04-15", 1, False, False), ("2024-04-22", 3, True, False),
        ("2024-04-29", 4, True, False), ("2024-05-06", 2, False, True)]
    assert summary.streak_weeks == 2
    assert (summary.total_sessions, summary.total_played_s) == (10, 7200.0)
    assert summary.weeks[-1].label == "2024-W19"


@pytest.mark.parametrize(("counts", "streak"), [
    ((3, 3, 3, 3), 4),     # this week already on target counts
    ((3, 3, 3, 0), 3),     # nothing yet this week: no break
    ((3, 0, 3, 3), 2),     # an empty week breaks it
    ((2, 3, 3, 5), 3),     # more than the high end is still on target
    ((0, 0, 0, 0), 0),
    ((3, 3, 2, 1), 0),     # last week fell short
])
def test_streak(counts: tuple[int, ...], streak: int) -> None:
    summary = summarize(weeks_of(*counts), "mid-back-knot", "M", THREE_TO_FOUR, NOW, tz=UTC)
    assert summary.streak_weeks == streak


def test_without_a_dosage_there_are_counts_and_no_streak() -> None:
    summary = summarize(weeks_of(1, 3), "neck", "Neck", None, NOW, weeks=3, tz=UTC)
    assert summary.streak_weeks is None
    assert [w.on_target for w in summary.weeks] == [None, None, None]


def test_weeks_run_monday_to_sunday_in_local_time() -> None:
    sunday_night_utc = utc("2024-05-05T23:30:00")  # already Monday 01:30 at UTC+2
    entries = [entry(sunday_night_utc)]
    in_utc = summarize(entries, "mid-back-knot", "M", None, NOW, weeks=2, tz=UTC)
    in_plus2 = summarize(entries, "mid-back-knot", "M", None, NOW, weeks=2, tz=PLUS2)
    assert [w.sessions for w in in_utc.weeks] == [1, 0]
    assert [w.sessions for w in in_plus2.weeks] == [0, 1]


def test_a_fractional_target_needs_the_next_whole_session() -> None:
    summary = summarize(weeks_of(0, 0, 0, 2), "r", "R", Target(2.5, 3), NOW, weeks=1, tz=UTC)
    assert summary.this_week.on_target is False


# --- the spoken intro --------------------------------------------------------------------------

def test_progress_phrase(db: Path) -> None:
    assert progress_phrase("mid-back-knot", NOW, db) is None  # no file at all
    record(entry(utc("2024-04-30T07:00:00")), db)  # last week
    assert progress_phrase("mid-back-knot", NOW, db, tz=UTC) == "This is your first session this week."
    assert progress_phrase("upper-back-knot", NOW, db) is None  # no history of that routine
    record(entry(utc("2024-05-06T07:00:00")), db)
    record(entry(utc("2024-05-07T07:00:00")), db)
    assert progress_phrase("mid-back-knot", NOW, db, tz=UTC) == "This is your third session this week."


@pytest.mark.parametrize(("n", "word"), [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (12, "twelfth"), (19, "nineteenth"),
    (20, "twentieth"), (21, "twenty-first"), (40, "fortieth"), (99, "ninety-ninth"),
    (101, "101st"), (111, "111th"), (112, "112th"), (123, "123rd")])
def test_ordinals(n: int, word: str) -> None:
    assert history.ordinal(n) == word


# --- the command -------------------------------------------------------------------------------

@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private history, a fixed clock and a fixed local zone (UTC+2, no DST)."""
    monkeypatch.setenv("VOICECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TZ", "XXX-2")
    time.tzset()
    monkeypatch.setattr(history_cli, "_now", lambda: NOW)
    yield tmp_path / "data" / "history.sqlite3"
    monkeypatch.undo()
    time.tzset()


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(history_cli.history, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def fill(db: Path) -> None:
    """Weeks of 15 Apr: 1, 22 Apr: 3, 29 Apr: 3, 6 May (local): 2, and a routine file's session."""
    for when in ("2024-04-16T07:00", "2024-04-23T07:00", "2024-04-25T07:00", "2024-04-27T07:00",
                 "2024-04-29T07:00", "2024-05-01T07:00", "2024-05-03T07:00",
                 "2024-05-05T23:30"):  # Sunday night in UTC, Monday 01:30 local
        assert record(entry(utc(when)), db) is None
    assert record(entry(utc("2024-05-07T06:30"), variation="wall", level="low", played_s=250.0,
                        ended="stopped", step="Wall angels", percent=41.04,
                        target=Target(3, 4)), db) is None
    assert record(entry(utc("2024-05-08T05:00"), "neck", title="Neck release", variation="seated",
                        played_s=95.0, planned_s=None, target=Target(2, 3)), db) is None


def test_json_is_the_documented_shape(cli_env: Path) -> None:
    fill(cli_env)
    code, out, err = run("mid-back-knot", "--json", "--limit", "2", "--weeks", "3")
    assert (code, err) == (0, "")
    expected = {
        "routine": "mid-back-knot",
        "total_sessions": 9,
        "total_minutes": 100.2,
        "sessions": [
            {"id": 9, "routine": "mid-back-knot", "title": "Mid-back knot", "variation": "wall",
             "level": "low", "started_at": "2024-05-07T06:30:00+00:00",
             "started_local": "2024-05-07T08:30:00+02:00", "played_s": 250.0, "planned_s": 730.0,
             "ended": "stopped", "stopped_at_step": "Wall angels", "stopped_at_percent": 41.0,
             "target": {"low": 3, "high": 4}},
            {"id": 8, "routine": "mid-back-knot", "title": "Mid-back knot",
             "variation": "kneeling", "level": "middle", "started_at": "2024-05-05T23:30:00+00:00",
             "started_local": "2024-05-06T01:30:00+02:00", "played_s": 720.0, "planned_s": 730.0,
             "ended": "completed", "stopped_at_step": None, "stopped_at_percent": None,
             "target": None},
        ],
        "routines": [
            {"routine": "mid-back-knot", "title": "Mid-back knot", "target": {"low": 3, "high": 4},
             "this_week": 1, "on_target_this_week": False, "streak_weeks": 2,
             "total_sessions": 9, "total_minutes": 100.2,
             "weeks": [
                 {"week": "2024-W17", "start": "2024-04-22", "sessions": 3, "minutes": 36.0,
                  "on_target": True},
                 {"week": "2024-W18", "start": "2024-04-29", "sessions": 3, "minutes": 36.0,
                  "on_target": True},
                 {"week": "2024-W19", "start": "2024-05-06", "sessions": 1, "minutes": 16.2,
                  "on_target": False},
             ]},
        ],
    }
    assert out == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"


def test_json_of_everything_and_of_nothing(cli_env: Path) -> None:
    code, out, _ = run("--json")
    assert (code, json.loads(out)) == (0, {"routine": None, "total_sessions": 0,
                                           "total_minutes": 0.0, "sessions": [], "routines": []})
    fill(cli_env)
    data = json.loads(run("--json", "--limit", "0")[1])
    assert len(data["sessions"]) == data["total_sessions"] == 10
    assert [(r["routine"], r["target"], r["streak_weeks"], r["this_week"])
            for r in data["routines"]] == [("neck", {"low": 2, "high": 3}, 0, 1),
                                           ("mid-back-knot", {"low": 3, "high": 4}, 2, 1)]


def test_table_and_chart_for_one_routine(cli_env: Path) -> None:
    fill(cli_env)
    code, out, err = run("mid-back-knot", "--limit", "3")
    assert (code, err) == (0, "")
    assert out == (
        "Recent sessions (the last 3 of 9)\n"
        "  When                  Variation  Level   Played  Ended\n"
        "  Tue 2024-05-07 08:30  wall       low       4:10  stopped at Wall angels (41%)\n"
        "  Mon 2024-05-06 01:30  kneeling   middle   12:00  completed\n"
        "  Fri 2024-05-03 09:00  kneeling   middle   12:00  completed\n"
        "\n"
        "mid-back-knot: Mid-back knot\n"
        "  This week  1 of 3-4\n"
        "  Streak     2 weeks on target\n"
        "  In all     9 sessions, 100 min\n"
        "\n"
        "  Week of  Sessions\n"
        "  18 Mar  ···│    0\n"
        "  25 Mar  ···│    0\n"
        "  01 Apr  ···│    0\n"
        "  08 Apr  ···│    0\n"
        "  15 Apr  █··│    1\n"
        "  22 Apr  ███│    3 ✓\n"
        "  29 Apr  ███│    3 ✓\n"
        "  06 May  █··│    1  this week\n"
        "  │ = 3 a week, the low end of 3-4\n"
    )


def test_all_routines_show_the_routine_column_and_counts_without_a_dosage(cli_env: Path) -> None:
    fill(cli_env)
    assert record(entry(utc("2024-05-08T04:00"), "calf", title="Calf stretch", planned_s=None,
                        played_s=60.0), cli_env) is None
    code, out, _ = run("--weeks", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "  When                  Routine        Variation  Level   Played  Ended"
    assert lines[2] == "  Wed 2024-05-08 07:00  neck           seated     middle    1:35  completed"
    assert "calf: Calf stretch\n  This week  1\n  In all     1 session, 1 min\n" in out
    # neck's file is not at hand: its target is the one it had when it was played
    assert "neck: Neck release\n  This week  1 of 2-3\n  Streak     0 weeks on target\n" in out
    assert "  29 Apr      0\n  06 May  █   1  this week\n" in out
    assert "mid-back-knot: Mid-back knot\n  This week  1 of 3-4\n" in out  # 34% played: not counted


def test_empty_history(cli_env: Path) -> None:
    assert run() == (0, "No sessions recorded yet.\n", "")
    assert run("mid-back-knot") == (0, "No sessions of mid-back-knot recorded yet.\n", "")


def test_unknown_routine_is_the_loaders_message(cli_env: Path) -> None:
    code, out, err = run("mid-bak-knot")
    assert (code, out) == (2, "")
    assert err.startswith("Error: unknown routine 'mid-bak-knot': did you mean 'mid-back-knot'?")


def test_a_routine_played_from_a_file_no_longer_around(cli_env: Path) -> None:
    fill(cli_env)
    code, out, _ = run("neck")
    assert code == 0 and "neck: Neck release\n  This week  1 of 2-3\n" in out


def test_forget_asks_first_and_no_keeps_everything(cli_env: Path) -> None:
    fill(cli_env)
    assert run("--forget", input="n\n") == (
        0, "Forget all 10 sessions in the history? [y/N]: n\nNothing forgotten.\n", "")
    assert len(sessions()) == 10
    assert run("mid-back-knot", "--forget", input="y\n") == (
        0, "Forget the 9 sessions of mid-back-knot? [y/N]: y\nForgot 9 sessions.\n", "")
    assert [e.routine_id for e in sessions()] == ["neck"]
    assert run("--forget", "--yes") == (0, "Forgot 1 session.\n", "")
    assert run("--forget", "--yes") == (0, "Nothing to forget.\n", "")


def test_forget_without_an_answer_does_nothing(cli_env: Path) -> None:
    fill(cli_env)
    code, _, _ = run("--forget", input="")
    assert code == 1
    assert len(sessions()) == 10


def test_export_csv_reads_back(cli_env: Path, tmp_path: Path) -> None:
    fill(cli_env)
    out_path = tmp_path / "out" / "sessions.csv"
    out_path.parent.mkdir()
    out_path.write_text("old contents")
    assert run("--export", str(out_path)) == (0, f"Wrote 10 sessions to {out_path}\n", "")
    with out_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(history.CSV_COLUMNS)
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 11)]  # oldest first
    assert rows[8] == {"id": "9", "routine": "mid-back-knot", "title": "Mid-back knot",
                       "variation": "wall", "level": "low",
                       "started_at": "2024-05-07T06:30:00+00:00", "played_s": "250.0",
                       "planned_s": "730.0", "ended": "stopped", "stopped_at_step": "Wall angels",
                       "stopped_at_percent": "41.0", "target_low": "3", "target_high": "4"}
    assert rows[9]["planned_s"] == "" and rows[9]["stopped_at_step"] == ""
    assert (rows[9]["stopped_at_percent"], rows[9]["target_low"], rows[9]["target_high"]) == (
        "", "2", "3")
    assert siblings(out_path) == ["sessions.csv"]  # no temporary file left behind
    assert run("neck", "--export", str(out_path))[0] == 0
    assert len(out_path.read_text().splitlines()) == 2


def test_export_to_a_folder_is_one_line(cli_env: Path, tmp_path: Path) -> None:
    fill(cli_env)
    assert run("--export", str(tmp_path)) == (
        1, "", f"Error: cannot write '{tmp_path}': it is a directory\n")


def test_damaged_history_is_one_line_exit_1(cli_env: Path) -> None:
    cli_env.parent.mkdir(parents=True)
    cli_env.write_bytes(b"garbage" * 100)
    for args in ((), ("--json",), ("--forget", "--yes"), ("--export", "x.csv")):
        assert run(*args) == (1, "", f"Error: {not_ours(cli_env)}\n"), args
    assert cli_env.read_bytes() == b"garbage" * 100


def test_newer_history_shows_but_cannot_be_forgotten(cli_env: Path) -> None:
    make_newer(cli_env, "wal")
    content = cli_env.read_bytes()
    code, out, _ = run("--json")
    assert code == 0 and json.loads(out)["total_sessions"] == 1
    assert run("--forget", "--yes") == (1, "", f"Error: {newer(cli_env)}\n")
    assert cli_env.read_bytes() == content


@pytest.mark.parametrize(("args", "message"), [
    (("--json", "--forget"), "--json, --export and --forget do not go together"),
    (("--yes",), "--yes only goes with --forget"),
])
def test_options_that_do_not_go_together(cli_env: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = run(*args)
    assert code == 2 and f"Error: {message}" in err


def test_help_has_an_example() -> None:
    assert "Example:" in (history_cli.history.help or "")


def test_no_heavy_imports() -> None:
    code = (
        "import sys, voicecoach.history_cli\n"
        "light = [m for m in ('sqlite3', 'yaml', 'numpy') if m in sys.modules]\n"
        "import voicecoach.history\n"
        "heavy = [m for m in ('numpy', 'scipy', 'yaml', 'jsonschema', 'click') if m in sys.modules]\n"
        "print(light, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] ['click']"  # click only through history_cli itself
