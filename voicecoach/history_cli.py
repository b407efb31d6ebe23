"""`voicecoach history`: the sessions played, week by week against the routine's dosage.

Parses flags, calls `history` (the library) and prints. The library, sqlite3 and the
routine loader are imported when the command runs, so `voicecoach --help` stays fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import clock, handled, json_printable, printable
from .errors import VoicecoachError

if TYPE_CHECKING:
    from .history import SessionEntry, Summary, Target
    from .model import Routine

CHART_WIDTH = 40
"""Bars longer than this are scaled down (a routine done many times a day)."""


def _now() -> datetime:
    """The clock, one place for tests to set it."""
    return datetime.now(UTC)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


Info = tuple[str | None, "Target | None"]
"""A routine's title and weekly target, when it still loads."""


def _info(routine: Routine) -> Info:
    from .history import Target

    return routine.title, Target.of(routine)


def _routine_info(routine_id: str) -> Info:
    """A routine file that moved or broke since it was played just shows counts."""
    from .load import load

    try:
        return _info(load(routine_id))
    except VoicecoachError:
        return None, None


def _resolve(name: str, db_path: Path) -> tuple[str, Info]:
    """ROUTINE as typed (a bundled id, a file, or the id of a routine no longer around)
    to the id its sessions are recorded under, with its title and target."""
    from . import history
    from .load import load

    try:
        routine = load(name)
    except VoicecoachError:
        if history.sessions(name, db_path):
            return name, (None, None)
        raise  # unknown routine and nothing recorded under that name: the loader's message
    return routine.id, _info(routine)


def _ended_text(entry: SessionEntry) -> str:
    """Where a stopped session stopped, in the percent the status line showed then (for
    sessions recorded before that was kept, the share of its time played)."""
    if entry.ended == "completed":
        return "completed"
    text = f"stopped at {entry.stopped_at_step}" if entry.stopped_at_step else "stopped"
    if entry.stopped_at_percent is not None:
        text += f" ({entry.stopped_at_percent:.0f}%)"
    elif entry.planned_s:
        text += f" ({min(100, round(100 * entry.played_s / entry.planned_s))}%)"
    return text


def table_lines(entries: Sequence[SessionEntry], *, with_routine: bool) -> list[str]:
    """Recent sessions as aligned columns, start in local time."""
    from .history import local

    header = ["When", "Routine", "Variation", "Level", "Played", "Ended"]
    rows = [[f"{local(e.started_at):%a %Y-%m-%d %H:%M}", printable(e.routine_id),
             printable(e.variation), printable(e.level), clock(e.played_s),
             printable(_ended_text(e))] for e in entries]
    if not with_routine:
        header.pop(1)
        for row in rows:
            row.pop(1)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    played = header.index("Played")
    lines = []
    for row in [header, *rows]:
        cells = [c.rjust(w) if i == played else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def chart_lines(summary: Summary) -> list[str]:
    """The last weeks as bars, one block per session, the target marked by a rule.

    Cells short of the target are dots, so a week's gap shows at a glance.
    """
    target = summary.target
    low = math.ceil(target.low) if target else 0  # sessions needed: 2.5 a week means 3
    high = math.ceil(target.high) if target else 0
    most = max([w.sessions for w in summary.weeks] + [high, 1])
    scale = min(1.0, CHART_WIDTH / most)

    def cells(n: int) -> int:
        return round(n * scale)

    width = cells(most)
    lines = []
    for week in summary.weeks:
        filled = cells(week.sessions)
        bar = "".join("█" if i < filled else ("·" if i < cells(low) else " ")
                      for i in range(width))
        if target:
            bar = bar[: cells(low)] + "│" + bar[cells(low):]
        mark = " ✓" if week.on_target else ""
        note = "  this week" if week.current else ""
        lines.append(f"  {week.start:%d %b}  {bar}  {week.sessions:>2}{mark}{note}".rstrip())
    if target:
        lines.append(f"  │ = {low} a week, the low end of {target}")
    return lines


def summary_lines(summary: Summary) -> list[str]:
    target = summary.target
    this_week = summary.this_week.sessions
    lines = [printable(f"{summary.routine_id}: {summary.title}")]
    lines.append(f"  This week  {this_week} of {target}" if target else f"  This week  {this_week}")
    if summary.streak_weeks is not None:
        lines.append(f"  Streak     {_plural(summary.streak_weeks, 'week')} on target")
    minutes = round(summary.total_played_s / 60)
    lines.append(f"  In all     {_plural(summary.total_sessions, 'session')}, {minutes} min")
    lines.append("")
    lines.append("  Week of  Sessions")
    lines.extend(chart_lines(summary))
    return lines


@click.command()
@click.argument("routine", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON, for scripts.")
@click.option("--limit", type=click.IntRange(0), default=10, show_default=True, metavar="N",
              help="How many recent sessions to list (0: all).")
@click.option("--weeks", type=click.IntRange(1, 520), default=8, show_default=True, metavar="N",
              help="How many weeks the chart (and the JSON) covers.")
@click.option("--export", "export_to", type=click.Path(path_type=Path), metavar="FILE.csv",
              help="Write every session (of ROUTINE, or all) to a CSV file.")
@click.option("--forget", is_flag=True, help="Delete the sessions of ROUTINE, or all; asks first.")
@click.option("--yes", "-y", is_flag=True, help="With --forget: do not ask.")
@handled
def history(routine: str | None, as_json: bool, limit: int, weeks: int, export_to: Path | None,
            forget: bool, yes: bool) -> None:
    """Show the sessions you played, and each week against the routine's dosage.

    Every `voicecoach play` is recorded (unless --no-log) in a small database in your
    data folder. ROUTINE (a bundled routine's id or a routine file) narrows it to one
    routine; a routine's `sessions_per_week` is its weekly target, and the streak
    counts the weeks in a row on target.

    \b
    Example:
        voicecoach history
        voicecoach history mid-back-knot --json
        voicecoach history --export sessions.csv
        voicecoach history mid-back-knot --forget
    """
    from . import history as lib

    if sum([as_json, export_to is not None, forget]) > 1:
        raise click.UsageError("--json, --export and --forget do not go together")
    if yes and not forget:
        raise click.UsageError("--yes only goes with --forget")
    db_path = lib.default_db_path()
    routine_id, named = _resolve(routine, db_path) if routine else (None, (None, None))

    if export_to is not None:
        count = lib.export_csv(export_to, routine_id, db_path)
        click.echo(f"Wrote {_plural(count, 'session')} to {export_to}")
        return
    if forget:
        _forget(routine_id, db_path, yes)
        return

    entries = lib.sessions(routine_id, db_path)
    now = _now()
    ids = [routine_id] if routine_id else list(dict.fromkeys(e.routine_id for e in entries))
    summaries = []
    for rid in ids:
        title, target = named if rid == routine_id else _routine_info(rid)
        mine = [e for e in entries if e.routine_id == rid]
        if title is None:  # not at hand (a person's own file, played from another folder):
            target = next((e.target for e in mine if e.target), None)  # as last played
        title = title or (mine[0].routine_title if mine else rid)
        summaries.append(lib.summarize(mine, rid, title, target, now, weeks=weeks))
    if as_json:
        data = lib.history_json(entries, summaries, routine_id=routine_id, limit=limit)
        click.echo(json_printable(json.dumps(data, indent=2, ensure_ascii=False)))
        return
    if not entries:
        click.echo(f"No sessions of {printable(routine_id)} recorded yet." if routine_id
                   else "No sessions recorded yet.")
        return
    shown = entries if limit == 0 else entries[:limit]
    more = f" (the last {len(shown)} of {len(entries)})" if len(shown) < len(entries) else ""
    click.echo(f"Recent sessions{more}")
    for line in table_lines(shown, with_routine=routine_id is None):
        click.echo(line)
    for summary in summaries:
        click.echo("")
        for line in summary_lines(summary):
            click.echo(line)


def _forget(routine_id: str | None, db_path: Path, yes: bool) -> None:
    from . import history as lib

    count = len(lib.sessions(routine_id, db_path))
    if count == 0:
        click.echo("Nothing to forget.")
        return
    what = (f"all {_plural(count, 'session')} in the history" if routine_id is None
            else f"the {_plural(count, 'session')} of {printable(routine_id)}")
    if not yes and not click.confirm(f"Forget {what}?", default=False):
        click.echo("Nothing forgotten.")
        return
    click.echo(f"Forgot {_plural(lib.forget(routine_id, db_path), 'session')}.")
