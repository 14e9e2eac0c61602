"""The JSON Schema (draft 2020-12) of flow definition files, so that editors can check
TOML, JSON and YAML flows as they are written. Generated from the definition Structs; the
validator types and every key's description are completed here by hand."""

from __future__ import annotations

from typing import Any

import msgspec

from .flow_actions import Action
from .flow_definition import FlowDefinition
from .flow_steps import Hook
from .validators import Validator

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# What each key means, for the people writing a file (the Structs' docstrings speak Python).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "FlowDefinition": {
        "": "A voxledger flow: a versioned multi-step form, its steps in order and how a run "
        "moves through them.",
        "name": "The flow's name: what `chat --flow NAME` and `start_flow` use.",
        "version": "The definition's version, 1 or more. A run keeps the version it started "
        "with; change the content, change the version.",
        "title": "A title for people (menus, /status). Default: none.",
        "modes": "The ways a run can go, chosen when it starts (branch cases name them). "
        "Default: none.",
        "start": "Where a run starts: a step's name or a branch (by mode only). Default: the "
        "first step.",
        "idle_timeout_s": "Seconds a run may stay idle before it expires. Default: never.",
        "remind_before_s": "Seconds before an idle run expires at which the user is reminded "
        "once (needs idle_timeout_s, and less than it). Default: no reminder.",
        "skip_words": 'The answers that skip an optional step, in any case. Default: ["skip", '
        '"-"].',
        "on_complete": "The names of registered actions to run, each once, after a run "
        "completes (by a subscriber that reads the log, never inside the command). "
        "Default: none.",
        "on_cancel": "The names of registered actions to run after a run is cancelled. "
        "Default: none.",
        "on_expire": "The names of registered actions to run after a run expires. Default: none.",
        "steps": "The steps, in order: ask steps and at most a confirm step at the end of "
        "each path.",
    },
    "Step": {
        "": "One step: an ask step validates an answer into its field; a confirm step shows "
        "every answer and takes yes or no.",
        "name": "The step's name, unique in the flow.",
        "field": "The answer's name in the run's data. Default: the step's name (ask steps); "
        "a confirm step has none.",
        "prompt": "What the step asks. {field} fills in an answer given before; {{ and }} "
        "are literal braces. Required unless prompt_hook is given.",
        "prompt_hook": "The name of a registered hook that computes the prompt from the mode "
        "and the answers.",
        "validator": "How the answer is checked and normalised: a type name or a table with "
        "`type` and its options. Default: text (ask), yes_no (confirm).",
        "kind": 'The kind of step: "ask" (default) or "confirm".',
        "optional": "Whether a skip word answers the step with no answer (null). Default: false.",
        "next": "Where a run goes after this step: a step's name, a branch, or nothing (the "
        "end; after the last step the run completes).",
        "label": "The field's label in the confirm summary. Default: the field's name, "
        "capitalised, underscores as spaces.",
    },
    "Branch": {
        "": "Chooses the next step: the goto of the first case in `when` that matches, or the "
        "step a hook chooses; else `else`.",
        "when": "The cases, tried in order.",
        "hook": "The name of a registered hook that chooses the next step (one of targets, or "
        "null for `else`). Use either when or hook.",
        "targets": "With a hook: every step the hook may choose.",
        "else": "The step when no case matches or the hook chooses none. Default: the end.",
    },
    "Rule": {
        "": "One case of a branch: it matches when every condition given holds.",
        "mode": "The run's mode is this one.",
        "field": "The answer to this field (asked before the branch) is `equals`, or contains "
        "`contains`; with neither, the field has no answer (a skipped optional step).",
        "equals": "The value the answer must have, as its validator normalises it.",
        "contains": "For a multiple_choice field: one option that must be among the answer's.",
        "goto": "The step to go to when the case matches.",
    },
}

_OPTIONS = {
    "description": "The options: a list of names, or a table of each name to its synonyms.",
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "minProperties": 1,
        },
    ],
}
_BOUND = {"anyOf": [{"type": "number"}, {"type": "string"}]}

# Each validator type: what it accepts and gives, its options, the options it requires.
VALIDATOR_TYPES: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "text": (
        "Any non-empty text, stripped of surrounding spaces.",
        {"max_length": {"type": "integer", "minimum": 1, "description": "At most this long."}},
        (),
    ),
    "integer": (
        "A whole number; the value is an integer.",
        {
            "min": {"type": "integer", "description": "The smallest number accepted."},
            "max": {"type": "integer", "description": "The largest number accepted."},
        },
        (),
    ),
    "decimal": (
        'A decimal number ("12.5", "12,5"); the value is exact text such as "12.50".',
        {
            "min": {**_BOUND, "description": "The smallest number accepted."},
            "max": {**_BOUND, "description": "The largest number accepted."},
            "places": {
                "type": "integer",
                "minimum": 0,
                "maximum": 30,
                "description": "At most this many decimals; the value has exactly as many.",
            },
        },
        (),
    ),
    "date": ('A calendar date in a common form; the value is "YYYY-MM-DD".', {}, ()),
    "time": (
        'A time of day (14:30, 9pm); the value is "HH:MM", or "HH:MM:SS" with seconds.',
        {"seconds": {"type": "boolean", "description": "Keep seconds. Default: false."}},
        (),
    ),
    "datetime": (
        "A date and time with a time zone; the value is ISO 8601 with its offset.",
        {
            "timezone": {
                "type": "string",
                "description": 'The zone of an answer that names none: "Europe/Berlin", '
                '"+03:00" or "UTC".',
            }
        },
        (),
    ),
    "email": ("An e-mail address; the domain is lower-cased.", {}, ()),
    "phone": (
        'A phone number; the value is E.164, such as "+447911123456".',
        {
            "default_prefix": {
                "type": "string",
                "pattern": "^\\+[1-9][0-9]{0,2}$",
                "description": 'The country code of a number given without one, such as "+44".',
            },
            "trunk_prefix": {
                "type": "string",
                "pattern": "^[0-9]{0,3}$",
                "description": "The national prefix dropped before the country code is added."
                ' Default: "0" ("1" for +1, "8" for +7, none for +39).',
            },
        },
        (),
    ),
    "choice": (
        "One of the options, by name or synonym; the value is the option's name.",
        {"options": _OPTIONS},
        ("options",),
    ),
    "multiple_choice": (
        "Several options in one answer, separated by commas or 'and'; the value is the list"
        " of option names in the options' order.",
        {
            "options": _OPTIONS,
            "min": {"type": "integer", "minimum": 1, "description": "At least this many."},
            "max": {"type": "integer", "minimum": 1, "description": "At most this many."},
        },
        ("options",),
    ),
    "regex": (
        "Text (stripped) that fully matches a regular expression.",
        {
            "pattern": {"type": "string", "description": "The regular expression (Python)."},
            "message": {"type": "string", "description": "The reason shown when refused."},
        },
        ("pattern",),
    ),
    "yes_no": ("A yes or a no; the value is true or false.", {}, ()),
    "custom": (
        "A registered Python function, by name.",
        {"name": {"type": "string", "description": "The function's registered name."}},
        ("name",),
    ),
}


def flow_schema() -> dict[str, Any]:
    """The JSON Schema of a flow definition file (TOML, JSON or YAML, read as data)."""
    generated = msgspec.json.schema(FlowDefinition, schema_hook=_custom_types)
    definitions = generated["$defs"]
    for struct, described in DESCRIPTIONS.items():
        schema = definitions[struct]
        schema["description"] = described[""]
        for key, text in described.items():
            if key:
                schema["properties"][key]["description"] = text
    flow = definitions["FlowDefinition"]["properties"]
    flow["name"]["minLength"] = 1
    flow["version"]["minimum"] = 1
    flow["idle_timeout_s"]["anyOf"][0]["exclusiveMinimum"] = 0
    flow["remind_before_s"]["anyOf"][0]["exclusiveMinimum"] = 0
    definitions["Step"]["properties"]["name"]["minLength"] = 1
    definitions["Validator"] = _validator_schema()
    schema = {
        "$schema": DIALECT,
        "title": "voxledger flow definition",
        "description": DESCRIPTIONS["FlowDefinition"][""],
        **generated,
    }
    return msgspec.json.decode(msgspec.json.encode(schema))  # plain JSON data: lists, not tuples


def _custom_types(type_: type) -> dict[str, Any]:
    if type_ is Validator:
        return {"$ref": "#/$defs/Validator"}
    if type_ is Hook or type_ is Action:
        return {"type": "string", "minLength": 1}
    raise NotImplementedError


def _validator_schema() -> dict[str, Any]:
    """A type name alone (for a type that needs no options), or a table with its type."""
    simple = [name for name, (_, _, required) in VALIDATOR_TYPES.items() if not required]
    tables = [
        {
            "title": name,
            "description": description,
            "type": "object",
            "properties": {"type": {"const": name}, **options},
            "required": ["type", *required],
            "additionalProperties": False,
        }
        for name, (description, options, required) in VALIDATOR_TYPES.items()
    ]
    return {
        "title": "Validator",
        "description": "How an answer is checked and normalised.",
        "oneOf": [
            {"description": "A validator type that needs no options.", "enum": simple},
            *tables,
        ],
    }
