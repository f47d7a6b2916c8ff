"""Server-side Table output (``kubectl get`` asks for it): columns, cells, ages, simple JSONPath.

kubectl prints whatever columns the server returns in a ``meta.k8s.io/v1`` Table; for custom
resources these are the CRD's ``additionalPrinterColumns``, whose JSONPaths are evaluated here.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "format": "",
    "description": "Creation time of the object.",
    "priority": 0,
    "jsonPath": ".metadata.creationTimestamp",
}
POD_COLUMNS = [
    {"name": "Ready", "type": "string", "format": "", "priority": 0, "description": "ready/all"},
    {"name": "Status", "type": "string", "format": "", "priority": 0, "description": "Phase."},
    {"name": "Restarts", "type": "integer", "format": "", "priority": 0, "description": ""},
    AGE_COLUMN,
    {"name": "IP", "type": "string", "format": "", "priority": 1, "description": "Pod IP."},
    {"name": "Node", "type": "string", "format": "", "priority": 1, "description": "Node."},
]

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$]+)
      | \.\*
      | \[(?P<index>-?\d+)\]
      | \[\*\]
      | \[['"](?P<quoted>[^'"]+)['"]\]
      | \[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*['"]?(?P<fvalue>[^'")]*)['"]?\)\]
    """,
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset printer columns use: fields, indexes, ``*``, ``[?(@.a=="b")]``.

    Returns every match in document order; a missing field gives no match (not an error).
    """
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current, position = [obj], 0
    while position < len(path):
        token = _TOKEN.match(path, position)
        if token is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {position}")
        current = [item for node in current for item in _step(node, token)]
        position = token.end()
    return current


def _step(node: Any, token: re.Match[str]) -> Iterable[Any]:
    field = token.group("field") or token.group("quoted")
    if field is not None:
        if isinstance(node, dict) and field in node:
            yield node[field]
    elif token.group("index") is not None:
        index = int(token.group("index"))
        if isinstance(node, list) and -len(node) <= index < len(node):
            yield node[index]
    elif token.group("fpath") is not None:
        for item in node if isinstance(node, list) else []:
            values = jsonpath(item, "." + token.group("fpath"))
            actual = _text(values[0]) if values else None
            if (actual == token.group("fvalue")) == (token.group("op") == "=="):
                yield item
    elif isinstance(node, dict):  # wildcard
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """An RFC 3339 timestamp as kubectl shows ages: ``45s``, ``3m12s``, ``5h``, ``2d3h``."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def column_cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    """One cell of a CRD printer column, typed the way the API server types it (or None)."""
    values = jsonpath(obj, column["jsonPath"])
    if not values or values[0] is None:
        return None
    value, kind = values[0], column.get("type", "string")
    if kind == "date":
        return human_age(value) if isinstance(value, str) else None
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else _text(value)


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for item in statuses if item.get("ready"))
    phase = "Terminating" if pod["metadata"].get("deletionTimestamp") else status.get("phase")
    return [
        f"{ready}/{len(spec.get('containers') or [])}",
        phase or "Unknown",
        sum(int(item.get("restartCount") or 0) for item in statuses),
        human_age(pod["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def table(
    objects: list[dict[str, Any]],
    columns: list[dict[str, Any]] | None,
    *,
    plural: str,
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects`` with a Name column then ``columns``.

    ``columns`` are CRD printer columns (with ``jsonPath``); None means the defaults: Pods get
    READY/STATUS/RESTARTS/AGE, anything else AGE.
    """
    if columns is None:
        columns = POD_COLUMNS if plural == "pods" else [AGE_COLUMN]
    definitions = [NAME_COLUMN] + [
        {key: column.get(key, "") for key in ("name", "type", "format", "description")}
        | {"priority": column.get("priority", 0)}
        for column in columns
    ]
    rows = []
    for obj in objects:
        if columns is POD_COLUMNS:
            cells = _pod_cells(obj)
        else:
            cells = [column_cell(column, obj) for column in columns]
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"], *cells]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    """Whether an Accept header asks for ``as=Table`` first (as kubectl get does)."""
    first = accept.split(",")[0].replace(" ", "")
    return "as=Table" in first
