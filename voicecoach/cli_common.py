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


def fail(error: VoicecoachError) -> None:
    if isinstance(error, RoutineError):
        for problem in error.problems:
            click.echo(str(problem), err=True)
    else:
        click.echo(f"Error: {error}", err=True)
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
