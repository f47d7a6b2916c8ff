"""The ``/scale`` subresource: an ``autoscaling/v1 Scale`` view of an object's replicas.

A CRD's ``subresources.scale`` names the paths (``specReplicasPath``, ``statusReplicasPath``,
``labelSelectorPath``); built-in resources with a scale subresource use ``.spec.replicas`` and
``.status.replicas``. Writing the Scale writes the object's spec (so its generation moves).
"""

from __future__ import annotations

from typing import Any

from tests.support.kube_store import ApiError, Key, KubeStore
from tests.support.kube_tables import jsonpath

SCALE_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")


def scale_of(store: KubeStore, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
    """The Scale object for ``obj`` (404 if its resource has no scale subresource)."""
    paths = store.scale_paths(key[0])
    spec_replicas = jsonpath(obj, paths.spec_replicas)
    status_replicas = jsonpath(obj, paths.status_replicas)
    status: dict[str, Any] = {"replicas": status_replicas[0] if status_replicas else 0}
    selector = jsonpath(obj, paths.label_selector) if paths.label_selector else []
    if selector:
        status["selector"] = selector[0]
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {field: meta[field] for field in SCALE_METADATA if field in meta},
        "spec": {"replicas": spec_replicas[0] if spec_replicas else 0},
        "status": status,
    }


def write_scale(
    store: KubeStore, key: Key, wanted: Any, *, dry_run: bool = False
) -> dict[str, Any]:
    """Set the object's replicas from a desired Scale; returns the Scale after the write.

    A ``metadata.resourceVersion`` in the Scale is a precondition (409 when stale).
    """
    wanted = wanted if isinstance(wanted, dict) else {}
    replicas = (wanted.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ApiError(
            422, "Invalid", f"spec.replicas must be a non-negative integer: {replicas!r}"
        )
    precondition = (wanted.get("metadata") or {}).get("resourceVersion")
    fields = store.scale_paths(key[0]).spec_replicas.strip(".").split(".")

    def set_replicas(obj: dict[str, Any]) -> dict[str, Any]:
        node = obj
        for field in fields[:-1]:
            node = node.setdefault(field, {})
        node[fields[-1]] = replicas
        if precondition:
            obj["metadata"]["resourceVersion"] = precondition
        return obj

    return scale_of(store, key, store.update(key, set_replicas, dry_run=dry_run))
