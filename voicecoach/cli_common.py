"""What every command shares: library errors become one line and an exit code; SIGTERM
and SIGHUP stop a command the way Ctrl-C does; text from files is shown safely."""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .errors import RoutineError, VoicecoachError
from .stops import interrupted

if TYPE_CHECKING:
    from .pipeline import Progress

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130
"""128 + SIGINT; a command stopped by SIGTERM or SIGHUP exits 128 + that signal."""

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """Text from a routine or the history, safe to print on a terminal: C0 and C1 control
    characters (ESC, which starts escape sequences, among them) are shown escaped as in a
    Python string, so a file cannot move the cursor, recolour or retitle the terminal."""
    return _CONTROLS.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


_JSON_RAW_CONTROLS = re.compile("[\x7f-\x9f]")


def json_printable(text: str) -> str:
    """JSON for a terminal: json.dumps escapes C0 controls but leaves DEL and C1 raw; here
    they become \\u escapes too (they can only stand inside strings, so the JSON is equal)."""
    return _JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


MAX_PROBLEMS_SHOWN = 25
"""A file with thousands of the same mistake needs the first few, and a count."""


def report(error: VoicecoachError) -> None:
    """A routine's problems one a line (at most MAX_PROBLEMS_SHOWN), any other error as one."""
    if not isinstance(error, RoutineError):
        click.echo(f"Error: {printable(str(error))}", err=True)
        return
    problems = list(dict.fromkeys(error.problems))
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(printable(str(problem)), err=True)
    more = len(problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        click.echo(f"... and {more:,} more problem{'s' if more > 1 else ''} in "
                   f"{printable(problems[0].file)}", err=True)


def tell_adapted(notices: tuple[str, ...]) -> None:
    """What was adapted to the person's options, one line each on stderr."""
    for notice in notices:
        click.echo(f"Note: adapted to your options: {printable(notice)}.", err=True)


def fail(error: VoicecoachError) -> None:
    report(error)
    sys.exit(error.exit_code)


def handled(f: F) -> F:
    """Turn the library's errors into one line each and an exit code; never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except VoicecoachError as e:
            fail(e)
        except KeyboardInterrupt as e:
            interrupted(e)
        except BrokenPipeError:  # `voicecoach show ... | head`: the reader has all it wanted
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on the terminal's stderr (the library's `Progress`); yields its update."""
    bar: Any = click.progressbar(length=total, label=label, file=sys.stderr)
    with bar:
        yield bar.update


STAGE_LINE_AFTER_S = 1.0
"""Where stderr is a pipe or a log, a stage still at work after this long says so."""


@contextmanager
def stage_line(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """One line on stderr for a stage that takes over a second (the library's `Progress`,
    for a log or a pipe): "Synthesizing speech...". A quick stage prints nothing."""
    timer = threading.Timer(STAGE_LINE_AFTER_S, lambda: click.echo(f"{label}...", err=True))
    timer.daemon = True
    timer.start()
    try:
        yield None
    finally:
        timer.cancel()


def terminal_progress() -> Progress:
    """A progress bar where stderr is a terminal; a line per long stage where it is not."""
    return progress_bar if sys.stderr.isatty() else stage_line


def clock(seconds: float, *, tenths: bool = False) -> str:
    """A time as people read it: 6:00 (rounded first, so never 5:60), 1:02:03 past an hour,
    and with tenths of a second where the timeline needs them: 6:00.0."""
    whole, tenth = divmod(round(seconds * 10), 10) if tenths else (round(seconds), 0)
    hours, rest = divmod(int(whole), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text}.{tenth}" if tenths else text
