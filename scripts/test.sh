#!/usr/bin/env bash
# Run the whole test suite (sets up first if needed): type check, lint, then pytest.
# The playback tests start their own PulseAudio server with a null sink.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m mypy
.venv/bin/python -m ruff check voicecoach tests scripts
exec .venv/bin/python -m pytest "$@"
