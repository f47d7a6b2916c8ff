"""Label and field selectors as the Kubernetes API evaluates them on list and watch requests."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_OP = re.compile(r"^\s*([^\s!=<>(),]+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_OP = re.compile(r"^\s*([^\s!=<>(),]+)\s*(==|=|!=|<|>)\s*([^\s,]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*$")


class SelectorError(ValueError):
    """A selector that does not parse; the API answers 400 Bad Request."""


def split_requirements(text: str) -> list[str]:
    """Split a selector on commas that are not inside ``in (...)`` parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def label_selector(text: str | None) -> Predicate:
    """Compile a label selector (``a=b,c!=d,e in (f,g),!h,i``) into a predicate on labels."""
    checks = [_label_requirement(part) for part in split_requirements(text or "")]
    return lambda labels: all(check(labels) for check in checks)


def _label_requirement(part: str) -> Predicate:
    if match := _SET_OP.match(part):
        key, op, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",") if value.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _CMP_OP.match(part):
        key, op, value = match.groups()
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return _numeric_requirement(key, op, value)
    if match := _EXISTS.match(part):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {part!r}")


def _numeric_requirement(key: str, op: str, value: str) -> Predicate:
    try:
        bound = int(value)
    except ValueError as exc:
        raise SelectorError(f"{op} needs an integer value: {value!r}") from exc

    def check(labels: Mapping[str, Any]) -> bool:
        try:
            actual = int(labels[key])
        except (KeyError, ValueError):
            return False
        return actual > bound if op == ">" else actual < bound

    return check


def field_selector(text: str | None) -> Predicate:
    """Compile a field selector (``metadata.name=x,status.phase!=Failed``) into a predicate.

    Any dotted path of the object can be selected on (the real API allows only a few per kind);
    a missing field compares as the empty string.
    """
    checks = []
    for part in split_requirements(text or ""):
        match = _CMP_OP.match(part)
        if match is None or match.group(2) in ("<", ">"):
            raise SelectorError(f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        checks.append(_field_requirement(path, op != "!=", value))
    return lambda obj: all(check(obj) for check in checks)


def _field_requirement(path: str, equal: bool, value: str) -> Predicate:
    keys = path.split(".")

    def check(obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for key in keys:
            current = current.get(key) if isinstance(current, Mapping) else None
        actual = "" if current is None else _as_text(current)
        return (actual == value) == equal

    return check


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def object_selector(labels: str | None, fields: str | None) -> Predicate:
    """One predicate on whole objects for a request's ``labelSelector`` and ``fieldSelector``."""
    by_labels = label_selector(labels)
    by_fields = field_selector(fields)
    return lambda obj: by_labels(obj.get("metadata", {}).get("labels") or {}) and by_fields(obj)
