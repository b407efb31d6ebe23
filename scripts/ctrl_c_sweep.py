"""Press Ctrl-C at many moments of `voicecoach play` and count how each run ended.

Each run plays a routine on a terminal of its own (a pseudo-terminal) through a private
PulseAudio server with a null sink, types Ctrl-C after the given delay, and expects
exit 130 with "Interrupted." last and no traceback. A run still going 30 s later is a
hang: its threads' stacks are printed. A hang one run in ~140 in start-up's first half
second is what this found (an import interrupted in one thread while another imported
too); see voicecoach/stops.py.

    python scripts/ctrl_c_sweep.py                       # 0.10 to 1.50 s, every 10 ms
    python scripts/ctrl_c_sweep.py --from 0.15 --to 0.5 --step 0.005 --cold
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pulse import PulseServer  # noqa: E402
from tests.terminal import OnTerminal  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routine", default=str(ROOT / "tests" / "cases" / "short.yaml"))
    parser.add_argument("--from", dest="start", type=float, default=0.10)
    parser.add_argument("--to", dest="stop", type=float, default=1.50)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--cold", action="store_true", help="a fresh phrase cache for every run")
    args = parser.parse_args()
    import time

    import pytest

    outcomes: collections.Counter[str] = collections.Counter()
    with PulseServer() as server, tempfile.TemporaryDirectory() as data:
        env = {**os.environ, **server.env, "VOICECOACH_DATA_DIR": data,
               "VOICECOACH_ENGINE": os.environ.get("VOICECOACH_ENGINE", "espeak")}
        delay = args.start
        while delay <= args.stop + 1e-9:
            if args.cold:
                env["VOICECOACH_CACHE_DIR"] = tempfile.mkdtemp(prefix="vc-sweep-cache-")
            run = OnTerminal.spawn([sys.executable, "-m", "voicecoach", "play", args.routine],
                                   env=env)
            time.sleep(delay)
            run.type(b"\x03")
            try:
                status, output = run.finish(timeout_s=30)
            except pytest.fail.Exception as hung:
                outcomes["hang"] += 1
                print(f"{delay:.3f} s: HANG\n{hung}", flush=True)
            else:
                clean = (status == 130 and output.rstrip().endswith("Interrupted.")
                         and "Traceback" not in output and "ignored" not in output)
                outcomes["clean" if clean else f"exit {status}"] += 1
                if not clean:
                    print(f"{delay:.3f} s: exit {status}\n{output[-1500:]}", flush=True)
            delay += args.step
    print(", ".join(f"{name}: {count}" for name, count in sorted(outcomes.items())))
    return 0 if set(outcomes) == {"clean"} else 1


if __name__ == "__main__":
    sys.exit(main())
