"""The session history: every `play` recorded in a small SQLite file, and what it adds up to.

The file lives in the user's data directory and outlasts every voicecoach version that
touches it, so its schema is versioned (`PRAGMA user_version`) and upgraded by an
ordered list of migrations, each run once, inside the same transaction as the write
that needed it. WAL mode, a busy timeout and one short transaction per write let two
sessions end at once. Nothing here ever deletes or rewrites a file it does not
recognise: a damaged file, another program's database or one written by a newer
voicecoach is reported in one line and left byte for byte as it was.

Recording a session must never spoil it, so `record` returns a one-line warning
instead of raising. Only the standard library (and platformdirs) is imported here.
"""

from __future__ import annotations

import csv
import errno
import io
import secrets
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Literal, TypeVar

from .errors import VoicecoachError
from .files import write_atomically
from .model import JSON, Amount, Range, Routine

T = TypeVar("T")

Ended = Literal["completed", "stopped"]
ENDINGS: tuple[Ended, ...] = ("completed", "stopped")

DB_NAME = "history.sqlite3"
BUSY_TIMEOUT_S = 10.0
"""How long a writer waits for another voicecoach's transaction (they take milliseconds)."""

APPLICATION_ID = int.from_bytes(b"VcHi", "big")
"""Stamped in the file header (`PRAGMA application_id`) so we never adopt another program's database."""

_MAGIC = b"SQLite format 3\x00"
CSV_COLUMNS = ("id", "routine", "title", "variation", "level", "started_at", "played_s",
               "planned_s", "ended", "stopped_at_step", "stopped_at_percent",
               "target_low", "target_high")


# --- the schema: one function per version, applied in order, never edited once released --

def _v1(db: sqlite3.Connection) -> None:
    """The first release's schema."""
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            routine_id TEXT NOT NULL,
            routine_title TEXT NOT NULL,
            variation TEXT NOT NULL,
            level TEXT NOT NULL,
            started_at TEXT NOT NULL,
            played_s REAL NOT NULL CHECK (played_s >= 0),
            ended TEXT NOT NULL CHECK (ended IN ('completed', 'stopped')),
            stopped_at_step TEXT
        )"""
    )


def _v2(db: sqlite3.Connection) -> None:
    """The planned length (to show how much of a stopped session was done), and an index
    for the per-routine, by-date queries that `history ROUTINE` and the intro make."""
    db.execute("ALTER TABLE sessions ADD COLUMN planned_s REAL CHECK (planned_s >= 0)")
    db.execute("CREATE INDEX sessions_by_routine ON sessions (routine_id, started_at)")


def _v3(db: sqlite3.Connection) -> None:
    """Where a stopped session stopped, as the share of the session the status line showed
    (position, not time played: a pause or a skip makes them differ); and the routine's
    weekly target when it was played, so a routine file that is not at hand (a person's
    own, run from another folder) still shows its target in plain `history`."""
    db.execute("ALTER TABLE sessions ADD COLUMN stopped_at_percent REAL "
               "CHECK (stopped_at_percent BETWEEN 0 AND 100)")
    db.execute("ALTER TABLE sessions ADD COLUMN target_low REAL CHECK (target_low > 0)")
    db.execute("ALTER TABLE sessions ADD COLUMN target_high REAL CHECK (target_high >= target_low)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
"""MIGRATIONS[n - 1] takes a version n - 1 database to version n. Append; never edit."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- values ----------------------------------------------------------------------------------

COUNTS_FROM = 0.5
"""The share of a stopped session that must have been played for it to count."""


@dataclass(frozen=True)
class SessionEntry:
    """One played session. `id` is set on entries read back from the database."""

    routine_id: str
    routine_title: str
    variation: str
    level: str
    started_at: datetime
    played_s: float
    ended: Ended
    stopped_at_step: str | None = None
    planned_s: float | None = None
    stopped_at_percent: float | None = None
    """Where a stopped session stopped, in percent of the session (what the status line showed)."""
    target: Target | None = None
    """The routine's weekly target when it was played (None: no dosage, or recorded before v3)."""
    id: int | None = None

    def __post_init__(self) -> None:
        if self.ended not in ENDINGS:
            raise ValueError(f"ended must be one of {ENDINGS}, got {self.ended!r}")
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must carry a time zone (use datetime.now(UTC))")
        if not self.played_s >= 0:
            raise ValueError(f"played_s must be 0 or more, got {self.played_s}")
        if self.stopped_at_percent is not None and not 0 <= self.stopped_at_percent <= 100:
            raise ValueError(f"stopped_at_percent must be 0 to 100, got {self.stopped_at_percent}")

    @property
    def counts(self) -> bool:
        """Whether it counts toward the week's dosage: completed, or stopped after at least
        half of it was played (a session stopped after four seconds is not a session)."""
        if self.ended == "completed":
            return True
        return bool(self.planned_s) and self.played_s >= COUNTS_FROM * (self.planned_s or 0)

    @property
    def started_utc(self) -> str:
        """How the start is stored: UTC ISO 8601 to the second, so text order is time order."""
        return self.started_at.astimezone(UTC).isoformat(timespec="seconds")

    def to_json(self, tz: tzinfo | None = None) -> dict[str, JSON]:
        return {
            "id": self.id,
            "routine": self.routine_id,
            "title": self.routine_title,
            "variation": self.variation,
            "level": self.level,
            "started_at": self.started_utc,
            "started_local": local(self.started_at, tz).isoformat(timespec="seconds"),
            "played_s": round(self.played_s, 1),
            "planned_s": None if self.planned_s is None else round(self.planned_s, 1),
            "ended": self.ended,
            "stopped_at_step": self.stopped_at_step,
            "stopped_at_percent": (None if self.stopped_at_percent is None
                                   else round(self.stopped_at_percent, 1)),
            "target": self.target.to_json() if self.target else None,
        }


class HistoryWarning(str):
    """The one line `record` hands back when a session could not be saved.

    A str, so the CLI prints it as it is; its own type so a caller can tell it apart.
    """


class HistoryError(VoicecoachError):
    """The history file cannot be read or written; exit 1, the file left as it was."""


@dataclass(frozen=True)
class Target:
    """Sessions a week the routine's dosage asks for; a week is on target at `low`."""

    low: float
    high: float

    @classmethod
    def of(cls, routine: Routine) -> Target | None:
        """The routine's `dosage.sessions_per_week`, if it has one."""
        return cls.from_amount(routine.dosage.sessions_per_week if routine.dosage else None)

    @classmethod
    def from_amount(cls, amount: Amount | None) -> Target | None:
        if amount is None:
            return None
        low, high = (amount.low, amount.high) if isinstance(amount, Range) else (amount, amount)
        return cls(low, high) if high > 0 else None

    def __str__(self) -> str:
        return _number(self.low) if self.low == self.high else f"{_number(self.low)}-{_number(self.high)}"

    def met(self, sessions: int) -> bool:
        return sessions >= self.low

    def to_json(self) -> dict[str, JSON]:
        return {"low": _json_number(self.low), "high": _json_number(self.high)}


@dataclass(frozen=True)
class Week:
    """An ISO week (Monday to Sunday, local time) of one routine."""

    start: date
    sessions: int
    played_s: float
    on_target: bool | None
    current: bool = False

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    def to_json(self) -> dict[str, JSON]:
        return {"week": self.label, "start": self.start.isoformat(), "sessions": self.sessions,
                "minutes": round(self.played_s / 60, 1), "on_target": self.on_target}


@dataclass(frozen=True)
class Summary:
    """One routine's sessions week by week, against its dosage."""

    routine_id: str
    title: str
    target: Target | None
    weeks: tuple[Week, ...]
    """The last few weeks, oldest first, ending with the current one."""
    streak_weeks: int | None
    total_sessions: int
    total_played_s: float

    @property
    def this_week(self) -> Week:
        return self.weeks[-1]

    def to_json(self) -> dict[str, JSON]:
        return {
            "routine": self.routine_id,
            "title": self.title,
            "target": self.target.to_json() if self.target else None,
            "this_week": self.this_week.sessions,
            "on_target_this_week": self.this_week.on_target,
            "streak_weeks": self.streak_weeks,
            "total_sessions": self.total_sessions,
            "total_minutes": round(self.total_played_s / 60, 1),
            "weeks": [w.to_json() for w in self.weeks],
        }


def _number(x: float) -> str:
    return str(_json_number(x))


def _json_number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


# --- where the file is, and opening it safely ---------------------------------------------

def data_dir() -> Path:
    from .cache import user_dir

    return user_dir("data")


def default_db_path() -> Path:
    return data_dir() / DB_NAME


def _not_ours(path: Path) -> HistoryError:
    return HistoryError(
        f"{path} is not a voicecoach history database (damaged, or another program's file); "
        "it was left as it is: move it aside to start a new history"
    )


def _newer(path: Path, version: int) -> HistoryError:
    return HistoryError(
        f"{path} was written by a newer voicecoach (history version {version}; this one knows "
        f"up to {SCHEMA_VERSION}); it was left as it is: upgrade voicecoach to add to it"
    )


def _read_head(path: Path) -> bytes | None:
    """The file's first 100 bytes; None when there is no file."""
    try:
        with path.open("rb") as f:
            return f.read(100)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HistoryError(f"cannot read {path}: {_reason(e)}") from None


HEADER_READS = 5
"""How often a header that looks foreign is read again before it is believed (see below)."""


def _header_version(path: Path) -> int | None:
    """The schema version in the file's header, before SQLite opens it; None when no file yet.

    Refusing a file here means SQLite never gets the chance to write to it. The read takes
    no lock, so it can catch another voicecoach's checkpoint halfway through rewriting the
    first page in place (the new version beside the old application id, when a new history
    is first written out): a header that looks foreign is read again, a moment later,
    until two reads agree, and only then refused. A foreign file reads the same every time.
    """
    head = _read_head(path)
    for _ in range(HEADER_READS):
        try:
            return _version_in_header(path, head)
        except HistoryError:
            time.sleep(0.002)
            again = _read_head(path)
            if again == head:
                raise
            head = again
    return _version_in_header(path, head)


def _version_in_header(path: Path, head: bytes | None) -> int | None:
    if not head:
        return None  # no file, or SQLite created it and has not written yet: an empty database
    if len(head) < 100 or not head.startswith(_MAGIC):
        raise _not_ours(path)
    version = int.from_bytes(head[60:64], "big", signed=True)
    application_id = int.from_bytes(head[68:72], "big", signed=True)
    _check_identity(path, version, application_id)
    return version


def _check_identity(path: Path, version: int, application_id: int) -> None:
    if version < 0 or application_id not in (0, APPLICATION_ID):
        raise _not_ours(path)
    if version > 0 and application_id != APPLICATION_ID:
        raise _not_ours(path)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection that waits for other writers and leaves transactions to us."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute("PRAGMA synchronous = FULL")  # a recorded session survives a power cut
    return db


_IDENTITY = """SELECT (SELECT user_version FROM pragma_user_version),
    (SELECT application_id FROM pragma_application_id), (SELECT count(*) FROM sqlite_master)"""


def _identity(db: sqlite3.Connection, path: Path) -> int:
    """The schema version, once the file is known to be ours (or empty); else why not.

    The version, the application id and whether there are tables are read in one
    statement, so from one snapshot. Read one statement each, outside a transaction,
    they straddled another voicecoach's first write: version 0 (nothing yet), then its
    tables, just committed, and the new history was refused as another program's file.
    """
    version, application_id, tables = db.execute(_IDENTITY).fetchone()
    _check_identity(path, int(version), int(application_id))
    if version == 0 and tables:
        raise _not_ours(path)  # unversioned, yet holds tables: not ours to add to
    return int(version)


def _writable_version(db: sqlite3.Connection, path: Path) -> int:
    """The schema version, if this release may write to the file; else why not.

    Asked through SQLite too, since a WAL file's own header may lag behind.
    """
    version = _identity(db, path)
    if version > SCHEMA_VERSION:
        raise _newer(path, version)
    return version


def _busy(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _write(path: Path, work: Callable[[sqlite3.Connection], T], *, checkpoint: bool = False) -> T:
    """Run `work` in one short write transaction, upgrading the schema first if needed.

    SQLite answers "busy" at once, without waiting, in a few cases (two processes
    switching a new file to WAL together): the whole transaction is tried again,
    which is safe since a busy transaction never committed.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return _write_once(path, work, checkpoint=checkpoint)
        except sqlite3.OperationalError as e:
            if not _busy(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.005 + secrets.randbelow(20) / 1000)


def _write_once(path: Path, work: Callable[[sqlite3.Connection], T], *, checkpoint: bool) -> T:
    """One attempt. The version is read again under the write lock: another voicecoach
    may have created or upgraded the file a moment ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    version = _header_version(path)
    if version is not None and version > SCHEMA_VERSION:
        raise _newer(path, version)
    db = _connect(path)
    try:
        _writable_version(db, path)  # reads only: nothing is written to a file we refuse
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _writable_version(db, path)
            for migrate in MIGRATIONS[version:]:
                migrate(db)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        if checkpoint:  # so forgotten rows do not linger in the WAL either
            with suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return result
    finally:
        db.close()


def _reason(error: BaseException) -> str:
    """A short lower-case reason for one line of output."""
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "")
        if name.startswith("SQLITE_FULL"):
            return "the disk is full"
        if _busy(error):
            return f"another voicecoach kept it locked for over {BUSY_TIMEOUT_S:g} s"
        if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")):
            return "permission denied or read-only"
        return str(error).lower() or type(error).__name__
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return "the disk is full"
        return (error.strerror or str(error)).lower()
    return str(error)


def _as_history_error(path: Path, error: sqlite3.Error | OSError) -> HistoryError:
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return _not_ours(path)
    return HistoryError(f"{path}: {_reason(error)}")


# --- writing -----------------------------------------------------------------------------------

_INSERT = """INSERT INTO sessions (routine_id, routine_title, variation, level, started_at,
    played_s, ended, stopped_at_step, planned_s, stopped_at_percent, target_low, target_high)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def record(entry: SessionEntry, db_path: Path | None = None) -> HistoryWarning | None:
    """Save one played session; never raises for a database or disk problem.

    A session that played is not spoiled by a history that cannot be written: the
    caller prints the returned line and carries on.
    """
    path = db_path or default_db_path()

    def insert(db: sqlite3.Connection) -> None:
        try:  # a row `history` cannot read makes it refuse the file: so does `play`
            _select(db, None)
        except (ValueError, TypeError):
            raise _not_ours(path) from None
        db.execute(_INSERT, (entry.routine_id, entry.routine_title, entry.variation, entry.level,
                             entry.started_utc, float(entry.played_s), entry.ended,
                             entry.stopped_at_step, entry.planned_s, entry.stopped_at_percent,
                             entry.target.low if entry.target else None,
                             entry.target.high if entry.target else None))

    try:
        _write(path, insert)
    except HistoryError as e:
        return HistoryWarning(f"could not save this session to the history: {e}")
    except (sqlite3.Error, OSError) as e:
        return HistoryWarning(f"could not save this session to the history: "
                              f"{_as_history_error(path, e)}")
    return None


def forget(routine_id: str | None = None, db_path: Path | None = None) -> int:
    """Delete the sessions of one routine, or all; returns how many. Deleted for real
    (secure_delete, WAL truncated), since a person asking to forget means it."""
    path = db_path or default_db_path()
    if _header_version(path) is None:
        return 0

    def delete(db: sqlite3.Connection) -> int:
        db.execute("PRAGMA secure_delete = ON")
        if routine_id is None:
            return db.execute("DELETE FROM sessions").rowcount
        return db.execute("DELETE FROM sessions WHERE routine_id = ?", (routine_id,)).rowcount

    try:
        return _write(path, delete, checkpoint=True)
    except (sqlite3.Error, OSError) as e:
        raise _as_history_error(path, e) from None


# --- reading -----------------------------------------------------------------------------------

_SELECT = """SELECT id, routine_id, routine_title, variation, level, started_at, played_s,
    ended, stopped_at_step, planned_s, stopped_at_percent, target_low, target_high FROM sessions"""


def _select(db: sqlite3.Connection, routine_id: str | None) -> list[SessionEntry]:
    where, args = (" WHERE routine_id = ?", (routine_id,)) if routine_id is not None else ("", ())
    rows = db.execute(_SELECT + where + " ORDER BY started_at DESC, id DESC", args).fetchall()
    return [
        SessionEntry(routine_id=_text(r[1]), routine_title=_text(r[2]), variation=_text(r[3]),
                     level=_text(r[4]), started_at=datetime.fromisoformat(_text(r[5])),
                     played_s=_real(r[6]), ended=r[7],
                     stopped_at_step=None if r[8] is None else _text(r[8]),
                     planned_s=None if r[9] is None else _real(r[9]),
                     stopped_at_percent=None if r[10] is None else _real(r[10]),
                     target=None if r[11] is None else Target(_real(r[11]), _real(r[12])),
                     id=int(r[0]))
        for r in rows
    ]


def _text(value: object) -> str:
    """A TEXT column as written by `record`; anything else (a BLOB) makes the row unreadable."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _real(value: object) -> float:
    if not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _read_only(path: Path, routine_id: str | None, version: int) -> list[SessionEntry]:
    """A newer voicecoach's file, read without any chance of writing to it; if its
    tables no longer read as this version expects, it is refused instead."""
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                             timeout=BUSY_TIMEOUT_S)
        try:
            return _select(db, routine_id)
        finally:
            db.close()
    except (sqlite3.Error, ValueError, TypeError):
        raise _newer(path, version) from None


def sessions(routine_id: str | None = None, db_path: Path | None = None) -> list[SessionEntry]:
    """Recorded sessions, newest first. No file yet means no sessions (none is created)."""
    path = db_path or default_db_path()
    try:
        version = _header_version(path)
        if version is None and not path.exists():
            return []
        if version is not None and version > SCHEMA_VERSION:
            return _read_only(path, routine_id, version)
        db = _connect(path)
        try:
            version = _identity(db, path)
            if version > SCHEMA_VERSION:
                return _read_only(path, routine_id, version)
            if version == 0:
                return []  # an empty file: nothing recorded yet
            if version < SCHEMA_VERSION:
                _write(path, lambda _db: None)  # upgrade once, then read as usual
            return _select(db, routine_id)
        finally:
            db.close()
    except (sqlite3.Error, OSError) as e:
        raise _as_history_error(path, e) from None
    except (ValueError, TypeError):  # a row this version cannot read (a date that is not ISO 8601)
        raise _not_ours(path) from None


def export_csv(output: Path, routine_id: str | None = None, db_path: Path | None = None) -> int:
    """Write every session (oldest first) with a header row; returns how many.

    Written whole or not at all, and only as a regular file (see `files.atomic_path`).
    """
    entries = list(reversed(sessions(routine_id, db_path)))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        row = e.to_json()
        writer.writerow([row["id"], row["routine"], row["title"], row["variation"], row["level"],
                         row["started_at"], row["played_s"],
                         "" if row["planned_s"] is None else row["planned_s"], row["ended"],
                         row["stopped_at_step"] or "",
                         "" if row["stopped_at_percent"] is None else row["stopped_at_percent"],
                         "" if e.target is None else _number(e.target.low),
                         "" if e.target is None else _number(e.target.high)])
    write_atomically(output, buffer.getvalue().encode("utf-8"))
    return len(entries)


# --- what the sessions add up to ---------------------------------------------------------------

def local(moment: datetime, tz: tzinfo | None = None) -> datetime:
    """The moment in the given zone, or the machine's own: people think in local weeks."""
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


def week_start(day: date) -> date:
    """The Monday of `day`'s ISO week."""
    return day - timedelta(days=day.weekday())


def summarize(entries: Iterable[SessionEntry], routine_id: str, title: str,
              target: Target | None, now: datetime, *, weeks: int = 8,
              tz: tzinfo | None = None) -> Summary:
    """Count one routine's sessions per local ISO week, the last `weeks` of them, and the
    streak of weeks on target.

    The current week counts toward the streak once it is on target, and does not break
    it while it is not yet: the week is not over.
    """
    mine = [e for e in entries if e.routine_id == routine_id]
    counts: Counter[date] = Counter()
    counted = [e for e in mine if e.counts]
    played: dict[date, float] = defaultdict(float)
    for e in mine:
        start = week_start(local(e.started_at, tz).date())
        counts[start] += e.counts
        played[start] += e.played_s
    current = week_start(local(now, tz).date())
    shown = []
    for back in range(weeks - 1, -1, -1):
        start = current - timedelta(weeks=back)
        n = counts[start]
        shown.append(Week(start, n, played[start], target.met(n) if target else None,
                          current=back == 0))
    streak = None
    if target is not None:
        first = min((week_start(local(e.started_at, tz).date()) for e in counted), default=current)
        streak = 1 if target.met(counts[current]) else 0
        start = current - timedelta(weeks=1)
        while start >= first and target.met(counts[start]):
            streak += 1
            start -= timedelta(weeks=1)
    return Summary(routine_id, title, target, tuple(shown), streak, len(mine),
                   sum(e.played_s for e in mine))


def history_json(entries: Sequence[SessionEntry], summaries: Sequence[Summary], *,
                 routine_id: str | None, limit: int, tz: tzinfo | None = None) -> dict[str, JSON]:
    """The stable shape `voicecoach history --json` prints (documented in the README)."""
    shown = entries if limit == 0 else entries[:limit]
    return {
        "routine": routine_id,
        "total_sessions": len(entries),
        "total_minutes": round(sum(e.played_s for e in entries) / 60, 1),
        "sessions": [e.to_json(tz) for e in shown],
        "routines": [s.to_json() for s in summaries],
    }


_ORDINALS = ("zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
             "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
             "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def ordinal(n: int) -> str:
    """Spoken ordinals: 3 -> 'third', 21 -> 'twenty-first' (digits from 100 on)."""
    if 0 <= n < 20:
        return _ORDINALS[n]
    if 20 <= n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens][:-1] + "ieth" if unit == 0 else f"{_TENS[tens]}-{_ORDINALS[unit]}"
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def progress_phrase(routine_id: str, now: datetime, db_path: Path | None = None,
                    tz: tzinfo | None = None) -> str | None:
    """What the intro says about this week: "This is your third session this week."

    None when the routine has no history yet, or when the history cannot be read
    (`record` will say why at the end): the coach never stalls on it.
    """
    try:
        past = sessions(routine_id, db_path)
    except (HistoryError, sqlite3.Error, OSError):
        return None
    if not past:
        return None
    this_week = week_start(local(now, tz).date())
    done = sum(1 for e in past if week_start(local(e.started_at, tz).date()) == this_week
               and e.started_at <= now)
    return f"This is your {ordinal(done + 1)} session this week."


_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen")


def _say_number(x: float) -> str:
    return _WORDS[int(x)] if float(x).is_integer() and 0 <= x < len(_WORDS) else _number(x)


def _say_target(target: Target) -> str:
    if target.low == target.high:
        return _say_number(target.low)
    return f"{_say_number(target.low)} to {_say_number(target.high)}"


@dataclass(frozen=True)
class Coaching:
    """What the coach says about the person's progress, from the history, and how often
    they have completed the routine (a returning person gets the brief session)."""

    greeting: tuple[str, ...] = ()
    farewell: tuple[str, ...] = ()
    completed: int = 0


def coaching(routine_id: str, target: Target | None, now: datetime,
             db_path: Path | None = None, tz: tzinfo | None = None) -> Coaching:
    """"Welcome back: your second session this week, of three to four." at the start, and
    the week's count and streak at the end, counting this session as done. A history that
    cannot be read says nothing (`record` warns at the end): the coach never stalls on it."""
    try:
        past = [e for e in sessions(routine_id, db_path) if e.started_at <= now]
    except (HistoryError, sqlite3.Error, OSError):
        return Coaching()
    completed = sum(1 for e in past if e.ended == "completed")
    if target is None:  # progress is told against the routine's dosage; without one, none
        return Coaching(completed=completed)
    of = f", of {_say_target(target)}"
    summary = summarize(past, routine_id, "", target, now, weeks=1, tz=tz)
    this_week = summary.this_week.sessions + 1
    hello = "Welcome back" if past else "Welcome"
    greeting = f"{hello}: your {ordinal(this_week)} session this week{of}."
    farewell = [f"That makes {_say_number(this_week)} this week{of}."]
    with_this = summarize(past + [_this_session(routine_id, now)], routine_id, "", target,
                          now, weeks=1, tz=tz)
    if with_this.this_week.on_target and not summary.this_week.on_target:
        farewell.append("You are on target for the week.")
    streak = with_this.streak_weeks or 0
    if streak >= 2:
        farewell.append(f"That is {_say_number(streak)} weeks in a row on target. Keep it up.")
    return Coaching((greeting,), tuple(farewell), completed)


def _this_session(routine_id: str, now: datetime) -> SessionEntry:
    return SessionEntry(routine_id, "", "", "middle", now, 0.0, "completed")
