"""The `eventsvc.dev/v1alpha1` Sensor schema, assembled from the trigger registry.

`eventsvc schema sensor` prints it; the copy shipped in `eventsvc/schemas/` for
editors is checked against this one by a test.
"""

from __future__ import annotations

from typing import Any

from eventsvc import triggers

API_VERSION = "eventsvc.dev/v1alpha1"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_HINT = "use lowercase letters, digits and '-', starting and ending alphanumeric (RFC 1123)"
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
_SCALAR = {"type": ["string", "number", "boolean"]}
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
                "pattern": r"^[A-Za-z_][A-Za-z0-9_\-]*$",
                "x-hint": "start with a letter or '_'; then letters, digits, '_' or '-'",
            },
            "eventSubject": {
                "type": "string",
                "description": "NATS subject filter (default events.>); narrows what is read.",
            },
            "correlate": _CORRELATE,
            "filters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "context": {
                        "type": "object",
                        "description": "CloudEvents attributes and extensions.",
                        "propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},
                        "additionalProperties": _STRING_MATCH,
                    },
                    "data": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["path", "value"],
                            "properties": {
                                "path": {"type": "string", "minLength": 1},
                                "value": {"anyOf": [{"type": "array", "items": _SCALAR}, _SCALAR]},
                            },
                        },
                    },
                },
            },
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
        "properties": {"template": template, **delivery_properties(template)},
    }


def sensor_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://eventsvc.dev/schemas/v1alpha1/sensor.json",
        "title": "eventsvc Sensor",
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
            "properties": {"template": template},
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
