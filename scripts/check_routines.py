"""Check the bundled routines against the schema and list them as checked.

    .venv/bin/python scripts/check_routines.py

Writes voicecoach/routines/checked.txt: one line per bundled routine, its schema key
(voicecoach.load.schema_key: the text and the schema) and its file. A bundled routine
whose key is listed is not checked against the schema again at run time, which spares
a first export jsonschema's import. Run it after editing a routine or the schema;
tests/test_load.py fails while the list is stale. Exit status 1 if a routine fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jsonschema
import yaml

from voicecoach.load import CHECKED_MANIFEST, schema_key
from voicecoach.schema import SCHEMA

FOLDER = Path(__file__).resolve().parent.parent / "voicecoach" / "routines"


def main() -> int:
    lines = []
    for path in sorted(FOLDER.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text)))
        for error in errors:
            print(f"{path.name}: {'.'.join(map(str, error.absolute_path))}: {error.message}",
                  file=sys.stderr)
        if errors:
            return 1
        lines.append(f"{schema_key(text)}  {path.name}\n")
    (FOLDER / CHECKED_MANIFEST).write_text("".join(lines), encoding="utf-8")
    print(f"wrote {FOLDER / CHECKED_MANIFEST}: {len(lines)} routines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
