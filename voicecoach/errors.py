"""One exception family for everything a person can cause.

The library raises these; only the CLI turns them into a message and an exit code.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad routine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class VoicecoachError(Exception):
    """A problem a person caused or can fix; printed as one line, never a traceback."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VoicecoachError):
    """Bad usage: unknown routine or variation, bad option value."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One fault in a routine file, located for a person to fix."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class RoutineError(VoicecoachError):
    """A routine that cannot be used; carries every problem found in it at once."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AudioError(VoicecoachError):
    """Sound files, encoders, devices and TTS engines."""


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """"did you mean 'hold'? " for the closest of `choices`, or "" when none is close."""
    import difflib

    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"did you mean '{hint[0]}'? " if hint else ""
