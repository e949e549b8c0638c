"""The `eventsvc.dev/v1alpha1` Sensor schema, assembled from the trigger registry.

`eventsvc schema sensor` prints it; the copy shipped in `eventsvc/schemas/` for
editors is checked against this one by a test.
"""

from __future__ import annotations

from typing import Any

from eventsvc import triggers
from eventsvc.yamldoc import API_VERSION, NAME_HINT, NAME_PATTERN

DEP_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
_ATTR = {
    "pattern": "^[a-z0-9]{1,20}$",
    "x-hint": "CloudEvents attribute names are 1-20 lowercase letters or digits",
}
_STRING_MATCH: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "exact value"},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "exact": {"type": "string"},
                "prefix": {"type": "string"},
                "suffix": {"type": "string"},
            },
        },
    ]
}
_DIALECT = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": _ATTR,
    "additionalProperties": {"type": "string"},
}
CONTEXT_FILTER: dict[str, Any] = {
    "type": "object",
    "description": (
        "CloudEvents attributes and extensions, all of which must match. Keys are either "
        "attribute names (a string for an exact value, or {exact, prefix, suffix}) or the "
        "Subscriptions-API dialects exact, prefix, suffix ({attribute: value}), all, any "
        "(lists of context filters) and not (a context filter)."
    ),
    "propertyNames": _ATTR,
    "properties": {
        "exact": _DIALECT,
        "prefix": _DIALECT,
        "suffix": _DIALECT,
        "all": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/contextFilter"}},
        "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/contextFilter"}},
        "not": {"$ref": "#/$defs/contextFilter"},
    },
    "additionalProperties": _STRING_MATCH,
}
_SCALAR = {"type": ["string", "number", "boolean"]}
_LOGIC = {"enum": ["and", "or"]}
_DATA_FILTER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "description": "One test on the event data; give exactly one of value, regex or exists.",
    "properties": {
        "path": {
            "type": "string",
            "minLength": 1,
            "description": "Dotted path; digits index lists, '*' fans out, '\\.' is a dot.",
        },
        "type": {"enum": ["string", "number", "bool"]},
        "value": {"anyOf": [{"type": "array", "items": _SCALAR}, _SCALAR]},
        "comparator": {"enum": ["=", "!=", "<", "<=", ">", ">="]},
        "regex": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "exists": {"type": "boolean"},
    },
}
_TIME_FILTER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["start", "stop"],
    "description": "A daily window (stop before start spans midnight) in an IANA timezone.",
    "properties": {
        "start": {"type": "string", "description": "HH:MM or HH:MM:SS, included"},
        "stop": {"type": "string", "description": "HH:MM or HH:MM:SS, excluded"},
        "timezone": {"type": "string", "description": "IANA name, default UTC"},
    },
}
_DURATION: dict[str, Any] = {
    "type": ["string", "number"],
    "description": "Go-style duration (500ms, 2s, 5m, 1h30m) or seconds.",
}


def _dependency() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "pattern": DEP_NAME_PATTERN,
                "x-hint": "start with a letter or '_'; then letters, digits, '_' or '-'",
            },
            "eventSubject": {
                "type": "string",
                "description": "NATS subject filter (default events.>): events.<...> reads the "
                               "EVENTS stream, results.<sensor>.<trigger> the trigger results "
                               "(stream RESULTS); wildcards * and > allowed.",
            },
            "filtersLogicalOperator": {
                **_LOGIC,
                "description": "How the filter groups combine (default and).",
            },
            "correlate": _CORRELATE,
            "filters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "context": {"$ref": "#/$defs/contextFilter"},
                    "data": {"type": "array", "items": _DATA_FILTER},
                    "dataLogicalOperator": _LOGIC,
                    "exprs": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "description": "CEL expressions over `data` and `event`; true passes.",
                    },
                    "exprLogicalOperator": _LOGIC,
                    "time": _TIME_FILTER,
                },
            },
        },
    }


def _parameter() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["src", "dest"],
        "properties": {
            "src": {
                "type": "object",
                "additionalProperties": False,
                "required": ["dependencyName"],
                "description": "Where the value comes from: one of dataKey, contextKey, expr; "
                "value is the default (or the constant when none is given).",
                "properties": {
                    "dependencyName": {"type": "string"},
                    "dataKey": {"type": "string", "minLength": 1},
                    "contextKey": {"type": "string", **_ATTR},
                    "expr": {"type": "string", "minLength": 1},
                    "value": {"description": "default when the key is missing"},
                },
            },
            "dest": {
                "type": "string",
                "minLength": 1,
                "description": "Dotted path inside the trigger kind's section, e.g. payload.pr.",
            },
            "operation": {"enum": ["overwrite", "append", "prepend"]},
        },
    }


def _trigger() -> dict[str, Any]:
    template: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN, "x-hint": NAME_HINT},
            "conditions": {"type": "string", "minLength": 1},
            **{key: kind.schema for key, kind in triggers.REGISTRY.items()},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["template"],
        "properties": {
            "template": template,
            "parameters": {"type": "array", "items": _parameter()},
            **delivery_properties(template),
        },
    }


def sensor_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://eventsvc.dev/schemas/v1alpha1/sensor.json",
        "title": "eventsvc Sensor",
        "$defs": {"contextFilter": CONTEXT_FILTER},
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": "Sensor"},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": NAME_PATTERN,
                        "maxLength": 63,
                        "x-hint": NAME_HINT,
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["dependencies", "triggers"],
                "properties": {
                    "dependencies": {"type": "array", "minItems": 1, "items": _dependency()},
                    "triggers": {"type": "array", "minItems": 1, "items": _trigger()},
                    "correlation": _CORRELATION,
                },
            },
        },
    }


# --- delivery: retries, rate limits, dead letters, concurrency, correlation ---

_CORRELATE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "description": "Correlation key: `data.<path>` or an event attribute, or a CEL expression "
    "over `data` and the attributes; events pair only when their keys are equal.",
}
_CORRELATION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "window": {**_DURATION, "description": "How long a partial match waits (default 24h)."},
        "conditionsReset": {
            "type": "array",
            "description": "Cron schedules (5 fields, UTC) at which partial matches are dropped.",
            "items": {"type": "string", "minLength": 1},
        },
    },
}


def delivery_properties(template: dict[str, Any]) -> dict[str, Any]:
    """Keys of a trigger item beside `template`: how its runs are delivered."""
    return {
        "retryStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "steps": {"type": "integer", "description": "Attempts in all (>= 1)."},
                "duration": {**_DURATION, "description": "Delay after the first failure."},
                "factor": {"type": "number", "description": "Delay multiplier per attempt."},
                "jitter": {"type": "number", "description": "Up to this fraction added."},
                "maxDuration": {**_DURATION, "description": "Longest delay between attempts."},
            },
        },
        "rateLimit": {
            "type": "object",
            "additionalProperties": False,
            "required": ["requestsPerUnit"],
            "properties": {
                "requestsPerUnit": {"type": "integer"},
                "unit": {"enum": ["Second", "Minute", "Hour"]},
            },
        },
        "dlqTrigger": {
            "type": "object",
            "additionalProperties": False,
            "required": ["template"],
            "properties": {
                "template": template,
                "parameters": {"type": "array", "items": _parameter()},
            },
        },
        "concurrency": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key"],
            "properties": {
                "key": {"type": "string", "minLength": 1},
                "policy": {"enum": ["queue", "replace"]},
            },
        },
    }
