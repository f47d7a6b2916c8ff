"""OpenAPI v3 documents for the served CRDs, so that ``kubectl explain`` works on them.

``GET /openapi/v3`` lists one document per CRD group-version; each document carries the CRDs'
``openAPIV3Schema`` under ``components.schemas`` tagged with ``x-kubernetes-group-version-kind``,
which is how kubectl finds a kind's schema. Built-in kinds have no documents here (kubectl then
falls back to what it knows itself, as it did without any OpenAPI).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from tests.support.kube_crds import ServedVersion

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _group_version_path(served: ServedVersion) -> str:
    return f"apis/{served.resource.group}/{served.resource.version}"


def schema_name(served: ServedVersion) -> str:
    """The component name the API server uses: reversed group, version, kind."""
    group = ".".join(reversed(served.resource.group.split(".")))
    return f"{group}.{served.resource.version}.{served.info.kind}"


def group_version_document(versions: Iterable[ServedVersion]) -> dict[str, Any]:
    """The OpenAPI v3 document of one group-version's CRDs."""
    schemas: dict[str, Any] = {
        OBJECT_META: {
            "type": "object",
            "description": "Standard object's metadata (name, namespace, labels, ...).",
        }
    }
    paths: dict[str, Any] = {}
    for served in versions:
        paths |= _paths(served)
        schema = copy.deepcopy(served.schema or {"type": "object"})
        properties = schema.setdefault("properties", {})
        properties["metadata"] = {
            "description": (properties.get("metadata") or {}).get(
                "description", "Standard object's metadata."
            ),
            "allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}],
        }
        schema["x-kubernetes-group-version-kind"] = [_gvk(served)]
        schemas[schema_name(served)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _gvk(served: ServedVersion) -> dict[str, str]:
    resource = served.resource
    return {"group": resource.group, "version": resource.version, "kind": served.info.kind or ""}


def _paths(served: ServedVersion) -> dict[str, Any]:
    """The object path with a ``get``: kubectl explain finds a resource's kind through it."""
    resource = served.resource
    scope = "namespaces/{namespace}/" if served.info.namespaced else ""
    reference = {"$ref": f"#/components/schemas/{schema_name(served)}"}
    get = {
        "operationId": f"read{served.info.kind}",
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": reference}}}
        },
        "x-kubernetes-action": "get",
        "x-kubernetes-group-version-kind": _gvk(served),
    }
    path = f"/apis/{resource.group}/{resource.version}/{scope}{resource.plural}/{{name}}"
    return {path: {"get": get}}


def documents(versions: Iterable[ServedVersion]) -> dict[str, dict[str, Any]]:
    """Group-version path (``apis/G/V``) -> its document, for every served CRD version."""
    grouped: dict[str, list[ServedVersion]] = {}
    for served in versions:
        grouped.setdefault(_group_version_path(served), []).append(served)
    return {path: group_version_document(items) for path, items in grouped.items()}


def root(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``/openapi/v3`` index: each document's URL, with a content hash as kubectl expects."""
    paths = {}
    for path, doc in sorted(docs.items()):
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
