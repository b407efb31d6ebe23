"""voicecoach run on a terminal of its own (a pseudo-terminal), as a person runs it.

The child is never waited for without a limit: a session that does not end in time has
every thread's stack dumped (faulthandler, on SIGABRT) into the failure, then is killed,
so a hang is a failed test saying where it hung, not a test run that never ends.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from dataclasses import dataclass, field

import pytest

from voicecoach.parallel import STOP_SIGNALS


def as_a_shell_starts_it() -> None:
    """In the child: a test run started in the background (or under nohup, or by a CI
    runner) may pass these signals on ignored or blocked; a person's shell does not."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@dataclass
class OnTerminal:
    """A process on a pseudo-terminal: `fd` is the terminal's other end (keys in, output out)."""

    pid: int
    fd: int
    output: bytearray = field(default_factory=bytearray)

    @classmethod
    def spawn(cls, args: list[str], env: dict[str, str] | None = None) -> OnTerminal:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                as_a_shell_starts_it()
                os.execvpe(args[0], args, {**(env or os.environ), "PYTHONFAULTHANDLER": "1"})
            finally:
                os._exit(127)
        return cls(pid, fd)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def _drain(self, wait_s: float) -> bool:
        """Read what the child wrote within wait_s; False once the terminal is closed."""
        ready, _, _ = select.select([self.fd], [], [], wait_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every process holding the terminal has closed it
            return False
        self.output += chunk
        return bool(chunk)

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """The exit code and everything written, once the child has ended (reading as it
        goes, so a full terminal never stalls it). Fails the test with the child's stacks
        if it has not ended within timeout_s."""
        deadline = time.monotonic() + timeout_s
        status = None
        while status is None and time.monotonic() < deadline:
            self._drain(0.05)
            done, wait_status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(wait_status)
        if status is None:
            os.kill(self.pid, signal.SIGABRT)  # faulthandler writes every thread's stack
            end = time.monotonic() + 5
            while time.monotonic() < end and self._drain(0.1):
                pass
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            pytest.fail(f"still running after {timeout_s:g} s; its output and stacks:\n"
                        f"{self.text()[-6000:]}")
        end = time.monotonic() + 5  # what is left, until the terminal closes
        while time.monotonic() < end and self._drain(0.1):
            pass
        return status, self.text()

    def text(self) -> str:
        return self.output.decode(errors="replace")
