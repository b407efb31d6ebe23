"""Golden timelines: each bundled routine and variation, beside its expected timeline.

What is said and sounded, in what order and in which step, must match exactly; times are
compared as the gap from each event to the next, which depends only on the schedule's
rules and on each phrase's length. espeak-ng's length for a phrase can differ by up to
about 60 ms with what the process synthesized before it (measured), hence the tolerance;
the exact timing rules (holds, windows) are asserted to the sample in test_compile.
Regenerate after a deliberate change: VOICECOACH_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from voicecoach.load import iter_bundled
from voicecoach.pipeline import prepare

GOLDEN = Path(__file__).parent / "golden"
CASES = [(r.id, v) for r in iter_bundled() for v in r.variation_names]
TOLERANCE_S = 0.1


def what(event: dict) -> tuple[str, str, str]:  # type: ignore[type-arg]
    return event["kind"], event.get("text") or event["tone"], event["step"]


@pytest.mark.parametrize(("routine", "variation"), CASES)
def test_timeline_matches_golden(routine: str, variation: str) -> None:
    actual = prepare(routine, variation).timeline.to_json()
    path = GOLDEN / f"{routine}-{variation}.json"
    if os.environ.get("VOICECOACH_UPDATE_GOLDEN"):
        path.write_text(json.dumps(actual, indent=1, ensure_ascii=False) + "\n")
    expected = json.loads(path.read_text())
    assert [what(e) for e in actual["events"]] == [what(e) for e in expected["events"]]
    gaps = [(b["start"] - a["start"], b["start"] - a["end"]) for a, b in
            zip(actual["events"], actual["events"][1:], strict=False)]
    expected_gaps = [(b["start"] - a["start"], b["start"] - a["end"]) for a, b in
                     zip(expected["events"], expected["events"][1:], strict=False)]
    for i, (got, want) in enumerate(zip(gaps, expected_gaps, strict=True)):
        event = actual["events"][i + 1]
        after_tone = actual["events"][i]["kind"] == "tone"  # tone lengths are fixed: start to start
        assert got[0 if after_tone else 1] == pytest.approx(want[0 if after_tone else 1],
                                                            abs=TOLERANCE_S), (i, event)
    assert actual["duration"] == pytest.approx(expected["duration"], rel=0.01)
