"""What a command printed on stderr, less the lines that only say a long stage is at work
(cli_common.stage_line: printed where stderr is not a terminal, once a stage passes a
second, so whether one appears depends on the machine's load)."""

from __future__ import annotations

import re

STAGE_LINE = re.compile(r"^(Synthesizing speech|Rendering \S.*)\.\.\.\n", re.MULTILINE)


def without_stage_lines(stderr: str) -> str:
    return STAGE_LINE.sub("", stderr)
