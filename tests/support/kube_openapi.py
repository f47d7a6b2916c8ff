"""OpenAPI v3 documents for the served CRDs, so that ``kubectl explain`` works on them and
``kubectl apply`` validates them on the server, as it does against a real API server.

``GET /openapi/v3`` lists one document per CRD group-version; each document carries the CRDs'
``openAPIV3Schema`` under ``components.schemas`` tagged with ``x-kubernetes-group-version-kind``,
which is how kubectl finds a kind's schema. Each object path also has a ``patch`` operation with
the ``fieldValidation`` query parameter: kubectl looks for it to choose server-side field
validation (``?fieldValidation=Strict``, checked by the emulator) over downloading
``/openapi/v2``, which is not served. Of the built-in kinds only CustomResourceDefinition has a
document (so that ``kubectl apply -f crd.yaml`` needs no ``--validate=false``), with no schema:
the emulator does not check built-in kinds' fields.
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
    """The object path: kubectl explain finds a resource's kind through its ``get``, kubectl
    apply's server-side validation through its ``patch``."""
    resource = served.resource
    scope = "namespaces/{namespace}/" if served.info.namespaced else ""
    reference = {"$ref": f"#/components/schemas/{schema_name(served)}"}
    path = f"/apis/{resource.group}/{resource.version}/{scope}{resource.plural}/{{name}}"
    return {path: _operations(served.info.kind or "", _gvk(served), reference)}


def _operations(kind: str, gvk: dict[str, str], reference: dict[str, str]) -> dict[str, Any]:
    """``get`` and ``patch`` of one object path (the patch accepting ``fieldValidation``)."""
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}}
    get = {
        "operationId": f"read{kind}",
        "responses": ok,
        "x-kubernetes-action": "get",
        "x-kubernetes-group-version-kind": gvk,
    }
    patch = {
        "operationId": f"patch{kind}",
        "parameters": [FIELD_VALIDATION],
        "responses": ok,
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": gvk,
    }
    return {"get": get, "patch": patch}


FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Ignore, Warn or Strict: how unknown fields in the object are treated.",
    "schema": {"type": "string", "uniqueItems": True},
}
CRD_DOCUMENT_PATH = "apis/apiextensions.k8s.io/v1"


def crd_kind_document() -> dict[str, Any]:
    """The OpenAPI v3 document of ``apiextensions.k8s.io/v1`` (CustomResourceDefinition only)."""
    name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
    gvk = {"group": "apiextensions.k8s.io", "version": "v1", "kind": "CustomResourceDefinition"}
    reference = {"$ref": f"#/components/schemas/{name}"}
    schema = {"type": "object", "x-kubernetes-group-version-kind": [gvk]}
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1"},
        "paths": {path: _operations("CustomResourceDefinition", gvk, reference)},
        "components": {"schemas": {name: schema}},
    }


def documents(versions: Iterable[ServedVersion]) -> dict[str, dict[str, Any]]:
    """Group-version path (``apis/G/V``) -> its document, for every served CRD version (and the
    CustomResourceDefinition kind's own)."""
    grouped: dict[str, list[ServedVersion]] = {}
    for served in versions:
        grouped.setdefault(_group_version_path(served), []).append(served)
    docs = {path: group_version_document(items) for path, items in grouped.items()}
    return {CRD_DOCUMENT_PATH: crd_kind_document(), **docs}


def root(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``/openapi/v3`` index: each document's URL, with a content hash as kubectl expects."""
    paths = {}
    for path, doc in sorted(docs.items()):
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
