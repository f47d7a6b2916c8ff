"""What the API server does with a CRD's structural schema on every write of a custom resource:
prune fields the schema does not declare, apply ``default`` values, and validate (422 Invalid).

Pruning keeps whatever sits under ``x-kubernetes-preserve-unknown-fields: true`` and the values
of ``additionalProperties`` maps. Validation uses jsonschema (Draft 4, the OpenAPI 3.0 base) with
``nullable`` honoured and string formats checked as the API server checks them (``date-time``
needs a non-empty RFC 3339 time: ``lastHeartbeat: ""`` is refused with the whole write); CEL
rules (``x-kubernetes-validations``) are not checked.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import jsonschema

ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def prune(value: Any, schema: dict[str, Any] | None, *, root: bool = False) -> Any:
    """``value`` without the fields ``schema`` does not declare (a new object)."""
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type", "object") == "object":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if properties is None and extra in (None, True):
            return value if extra is True or "type" not in schema else {}
        result = {}
        for key, item in value.items():
            if root and key in ROOT_FIELDS:
                result[key] = item
            elif properties is not None and key in properties:
                result[key] = prune(item, properties[key])
            elif isinstance(extra, dict):
                result[key] = prune(item, extra)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def unknown_fields(value: Any, schema: dict[str, Any] | None) -> list[str]:
    """Paths of the fields of an object that :func:`prune` would drop (``spec.foo``)."""
    return _dropped(value, prune(value, schema, root=True), "")


def _dropped(before: Any, after: Any, path: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key, item in before.items():
            where = f"{path}.{key}" if path else str(key)
            found += [where] if key not in after else _dropped(item, after[key], where)
        return found
    if isinstance(before, list) and isinstance(after, list):
        return [
            field
            for index, (old, new) in enumerate(zip(before, after, strict=False))
            for field in _dropped(old, new, f"{path}[{index}]")
        ]
    return []


def apply_defaults(value: Any, schema: dict[str, Any] | None) -> Any:
    """Fill in ``default`` values of absent properties, recursively (mutates and returns)."""
    if not schema:
        return value
    if isinstance(value, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(value[key], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(schema.get("properties") or {}):
                apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def validation_errors(value: Any, schema: dict[str, Any] | None) -> list[str]:
    """Every schema violation as ``path: message``; empty when valid."""
    if not schema:
        return []
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    return [f"{_path(error.absolute_path)}: {error.message}" for error in errors]


def format_checker() -> jsonschema.FormatChecker:
    """jsonschema's checker of Draft 4 formats; fails when it cannot check ``date-time``.

    jsonschema checks ``date-time`` only when ``rfc3339-validator`` is installed and otherwise
    passes every string silently, which would let a status the API server refuses through.
    """
    checker = jsonschema.Draft4Validator.FORMAT_CHECKER
    if "date-time" not in checker.checkers:
        raise RuntimeError("jsonschema cannot check date-time: pip install rfc3339-validator")
    return checker


@functools.lru_cache(maxsize=64)
def _validator(schema_text: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(
        _nullable(json.loads(schema_text)), format_checker=format_checker()
    )


def _nullable(schema: Any) -> Any:
    """OpenAPI's ``nullable: true`` in JSON Schema terms (``anyOf`` with ``null``)."""
    if isinstance(schema, list):
        return [_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {
        key: _nullable(item)
        for key, item in schema.items()
        if not (key == "nullable" and isinstance(item, bool))
    }
    if schema.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"
