"""The routine format as a JSON Schema: one source for the loader and for editors.

`voicecoach schema` prints it; a YAML language server given it completes and checks
routines as they are typed. `x-expected` says, in words, what a value should be: the
loader uses it for error messages.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SECONDS = 3600
MAX_COUNT = 1000
NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
RANGE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)\s*$"
"""A range, "20-30" or "20 to 30": the schema's pattern, and the loader reads its two groups."""
PURPOSES = ("background", "instruction", "safety")
TONE_KINDS = ("hold_start", "hold_end", "switch", "countdown", "rest", "finish")


def _seconds(what: str, minimum: float = 0) -> dict[str, Any]:
    return {
        "description": f"{what}: seconds, or a range like 20-30 or '20 to 30'",
        "x-expected": "seconds or a range like 20-30",
        "anyOf": [
            {"type": "number", "minimum": minimum, "maximum": MAX_SECONDS},
            {"type": "string", "pattern": RANGE_PATTERN},
        ],
    }


def _count(what: str) -> dict[str, Any]:
    return {
        "description": f"{what}: a whole number, or a range like 12-15",
        "x-expected": "a whole number or a range like 12-15",
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
            {"type": "string", "pattern": RANGE_PATTERN},
        ],
    }


_TEXT = {"type": "string", "minLength": 1, "maxLength": 2000, "x-expected": "some text"}
_ONLY = {
    "description": "the variations this applies to; others skip it",
    "type": "array",
    "items": {"type": "string", "x-expected": "a variation name"},
    "minItems": 1,
    "x-expected": "a list of variation names",
}
_LINE = {
    "description": "something spoken: text, or text that differs by variation",
    "x-expected": "text, or a mapping with text and only",
    "anyOf": [
        {"$ref": "#/$defs/text"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["text"],
            "properties": {
                "text": {
                    "description": "the words, or a mapping variation -> words",
                    "x-expected": "text, or a mapping from variation name to text",
                    "anyOf": [
                        {"$ref": "#/$defs/text"},
                        {"type": "object", "additionalProperties": {"$ref": "#/$defs/text"}},
                    ],
                },
                "only": {"$ref": "#/$defs/only"},
                "purpose": {
                    "enum": list(PURPOSES),
                    "description": "background is left out of brief sessions; instruction and "
                                   "safety never are (default: background in intro and dosage, "
                                   "safety in safety, instruction elsewhere)",
                    "x-expected": "one of " + ", ".join(PURPOSES),
                },
            },
        },
    ],
}
_LINES = {
    "description": "lines spoken one after the other",
    "x-expected": "a list of lines",
    "type": "array",
    "items": {"$ref": "#/$defs/line"},
}
_ANNOUNCE = {
    "description": "something said or sounded inside a hold, never stretching it",
    "type": "object",
    "additionalProperties": False,
    "x-expected": "one of halfway, left, after or countdown",
    "properties": {
        "halfway": {"$ref": "#/$defs/text", "description": "said at the hold's midpoint"},
        "left": {
            "type": "number", "minimum": 1, "maximum": MAX_SECONDS,
            "description": "say `say` this many seconds before the hold ends",
            "x-expected": "seconds before the end",
        },
        "after": {
            "type": "number", "minimum": 0, "maximum": MAX_SECONDS,
            "description": "say `say` this many seconds after the hold starts",
            "x-expected": "seconds after the start",
        },
        "say": {"$ref": "#/$defs/text"},
        "countdown": {
            "type": "integer", "minimum": 1, "maximum": 10,
            "description": "countdown ticks in the last N seconds",
            "x-expected": "a number of ticks from 1 to 10",
        },
    },
}
_PHASE = {
    "description": "one timed part of a rep (tempo): words at its start, a fixed length",
    "type": "object",
    "additionalProperties": False,
    "x-expected": "a phase with say and seconds, a hold, or arms with phases",
    "properties": {
        "say": {"$ref": "#/$defs/text"},
        "seconds": _seconds("how long this phase lasts, from its start", minimum=0.1),
        "hold": _seconds("a hold inside the rep, timed between hold tones", minimum=0.1),
        "arms": {
            "description": "run `phases` once per arm, with a switch cue between; {arm} names it",
            "type": "array", "items": {"$ref": "#/$defs/text"}, "minItems": 2,
            "x-expected": "a list of arm names like [left, right]",
        },
        "phases": {"type": "array", "items": {"$ref": "#/$defs/phase"}, "minItems": 1,
                   "x-expected": "a list of phases"},
        "switch": {"$ref": "#/$defs/text", "description": "said at each arm switch"},
    },
}
_STEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"$ref": "#/$defs/text", "description": "the step's title (a chapter)"},
        "only": {"$ref": "#/$defs/only"},
        "say": {"$ref": "#/$defs/lines", "description": "instructions, said first"},
        "get_ready": {
            "type": "number", "minimum": 0, "maximum": 120,
            "description": "seconds of quiet after the instructions to get into position",
            "x-expected": "seconds",
        },
        "hold": _seconds("a hold, timed from its start tone to its end tone", minimum=1),
        "during": {
            "type": "array", "items": {"$ref": "#/$defs/announce"},
            "description": "announcements inside the hold",
            "x-expected": "a list of announcements",
        },
        "reps": _count("repetitions"),
        "count": {"type": "boolean", "description": "say each rep's number (default true)",
                  "x-expected": "true or false"},
        "milestones": {
            "type": "boolean",
            "description": "say halfway, a few to go and the last one as the reps go by "
                           "(default: for ten reps or more)",
            "x-expected": "true or false",
        },
        "announce": {
            "description": "announce the exercise with its place ('Exercise 2 of 5: ...') before "
                           "its instructions: true (default), false, or the name to say",
            "x-expected": "true, false, or the name to say",
            "anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/text"}],
        },
        "tempo": {"type": "array", "items": {"$ref": "#/$defs/phase"}, "minItems": 1,
                  "description": "the phases of one rep", "x-expected": "a list of phases"},
        "sides": {
            "type": "array", "items": {"$ref": "#/$defs/text"}, "minItems": 2,
            "description": "do the step once per side, with a switch cue between; {side} names it",
            "x-expected": "a list of side names like [left, right]",
        },
        "switch": {"$ref": "#/$defs/text", "description": "said at each side switch"},
        "repeat": _count("how many times to do the hold or reps (find another spot, again)"),
        "between": {"$ref": "#/$defs/lines", "description": "said before each repeat"},
        "sets": _count("sets"),
        "rest": _seconds("rest between sets", minimum=1),
        "after": {"$ref": "#/$defs/lines", "description": "said when the step is done"},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://voicecoach.invalid/routine.schema.json",
    "title": "voicecoach routine",
    "description": "A spoken exercise routine for voicecoach.",
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "steps"],
    "properties": {
        "title": {"$ref": "#/$defs/text"},
        "description": {"$ref": "#/$defs/text"},
        "source": {"$ref": "#/$defs/text", "description": "where the routine comes from"},
        "equipment": {"$ref": "#/$defs/lines", "description": "what the person needs"},
        "dosage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["say"],
            "description": "how much and how often; said at the end",
            "properties": {
                "say": {"$ref": "#/$defs/lines"},
                "reps": _count("reps a session"),
                "sessions_per_week": _count("sessions a week"),
                "weeks": _count("weeks until results are expected"),
            },
        },
        "variations": {
            "type": "object",
            "description": "ways to do the routine; exactly one has default: true",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["title"],
                "properties": {
                    "title": {"$ref": "#/$defs/text"},
                    "default": {"type": "boolean", "x-expected": "true or false"},
                },
            },
        },
        "intro": {"$ref": "#/$defs/lines", "description": "said at the start"},
        "safety": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "start": {"$ref": "#/$defs/lines", "description": "said before the first step"},
                "end": {"$ref": "#/$defs/lines", "description": "said after the last step"},
            },
        },
        "finish": {"$ref": "#/$defs/lines", "description": "said after the last step"},
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "description": "values every step takes unless it says otherwise",
            "properties": {
                "get_ready": _STEP["properties"]["get_ready"],
                "during": _STEP["properties"]["during"],
                "milestones": _STEP["properties"]["milestones"],
                "announce": {"type": "boolean", "x-expected": "true or false",
                             "description": "announce every exercise with its place (default true)"},
            },
        },
        "sounds": {
            "type": "object",
            "description": "your own WAV file per tone kind, relative to the routine file",
            "additionalProperties": False,
            "properties": {k: {"$ref": "#/$defs/text"} for k in TONE_KINDS},
        },
        "music": {
            "type": "string", "minLength": 1, "maxLength": 4096,
            "description": "a sound file, or a folder of them played in name order, under the "
                           "voice (ducked where it speaks), relative to the routine file; "
                           "--music replaces it, --no-music leaves it out",
            "x-expected": "the path of a sound file or a folder",
        },
        "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"},
                  "x-expected": "a list of steps"},
    },
    "$defs": {
        "text": _TEXT,
        "only": _ONLY,
        "line": _LINE,
        "lines": _LINES,
        "announce": _ANNOUNCE,
        "phase": _PHASE,
        "step": _STEP,
    },
}


def schema_json() -> str:
    return json.dumps(SCHEMA, indent=2, ensure_ascii=False)
