"""The three PATCH flavours of the Kubernetes API, applied to plain JSON objects.

- JSON merge patch (RFC 7386): dicts merge, ``null`` deletes, lists are replaced;
- strategic merge patch: like a merge patch, but the lists Kubernetes declares with a merge key
  (containers by name, conditions by type, ...) merge item by item, ``finalizers`` merge as a
  set, and the ``$patch`` / ``$deleteFromPrimitiveList`` directives are honoured;
- JSON patch (RFC 6902), whose failed ``test`` operation means 422 in the API.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Field name -> candidate merge keys, as declared by the Kubernetes types (patchMergeKey).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "containerStatuses": ("name",),
    "initContainerStatuses": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
}
SET_LISTS = {"finalizers"}
_DELETE = object()  # marks an item a `$patch: delete` removed


class PatchError(ValueError):
    """The patch cannot be applied (malformed); the API answers 422 or 400."""


class PatchTestFailed(PatchError):
    """A JSON patch ``test`` operation failed; the API answers 422."""


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Apply a PATCH request body to a copy of ``target`` according to its content type."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError(f"a {kind or 'merge'} patch must be a JSON object")
    if kind == STRATEGIC_PATCH:
        return strategic_merge_patch(target, patch)
    return merge_patch(target, patch)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: merge ``patch`` into a copy of ``target``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902: apply a list of operations to a copy of ``target``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchTestFailed(str(exc)) from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(str(exc)) from exc


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch with the merge keys of the common Kubernetes types."""
    result = _strategic_dict(copy.deepcopy(target), patch)
    return {} if result is _DELETE else result


def _strategic_dict(target: Any, patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: ordering and pruning hints only
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _strategic_dict(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _strategic_list(key, result.get(key), value)
        else:
            result[key] = value
    return result


def _strategic_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    current = list(target) if isinstance(target, list) else []
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    if field in SET_LISTS:
        return current + [item for item in patch if item not in current]
    merge_key = _merge_key(field, patch)
    if merge_key is None:
        return copy.deepcopy(patch)
    for item in patch:
        index = next(
            (i for i, old in enumerate(current) if old.get(merge_key) == item.get(merge_key)),
            None,
        )
        merged = _strategic_dict(current[index] if index is not None else {}, item)
        if index is None:
            if merged is not _DELETE:
                current.append(merged)
        elif merged is _DELETE:
            del current[index]
        else:
            current[index] = merged
    return current


def _merge_key(field: str, patch: list[Any]) -> str | None:
    if not patch or not all(isinstance(item, dict) for item in patch):
        return None
    for key in MERGE_KEYS.get(field, ()):
        if all(key in item for item in patch):
            return key
    return None
