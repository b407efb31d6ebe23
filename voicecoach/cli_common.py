"""What every command shares: library errors become one line and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .errors import RoutineError, VoicecoachError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130


MAX_PROBLEMS_SHOWN = 25
"""A file with thousands of the same mistake needs the first few, and a count."""


def report(error: VoicecoachError) -> None:
    """A routine's problems one a line (at most MAX_PROBLEMS_SHOWN), any other error as one."""
    if not isinstance(error, RoutineError):
        click.echo(f"Error: {error}", err=True)
        return
    problems = list(dict.fromkeys(error.problems))
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(str(problem), err=True)
    more = len(problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        click.echo(f"... and {more:,} more problem{'s' if more > 1 else ''} in "
                   f"{problems[0].file}", err=True)


def tell_adapted(notices: tuple[str, ...]) -> None:
    """What was adapted to the person's options, one line each on stderr."""
    for notice in notices:
        click.echo(f"Note: adapted to your options: {notice}.", err=True)


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
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]
