"""CustomResourceDefinitions as the emulator serves them: discovery info, columns, scale paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import kmock
import yaml

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


@dataclasses.dataclass(frozen=True)
class ScalePaths:
    """Where a resource keeps what its ``/scale`` subresource shows (CRD ``subresources.scale``)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None


@dataclasses.dataclass(frozen=True)
class ServedVersion:
    """One served version of a CRD: the resource, its discovery info, columns and scale."""

    resource: kmock.resource
    info: kmock.ResourceInfo
    columns: list[dict[str, Any]] | None
    scale: ScalePaths | None
    schema: dict[str, Any] | None = None  # openAPIV3Schema, for /openapi/v3 (kubectl explain)


def load_crd(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A CRD as a dict, from a dict, a YAML file path, or YAML text."""
    if isinstance(source, dict):
        return source
    text = Path(source).read_text() if isinstance(source, Path) else source
    if "\n" not in text and Path(text).exists():
        text = Path(text).read_text()
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    crds = [doc for doc in docs if doc.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"expected one CustomResourceDefinition, found {len(crds)}")
    return crds[0]


def served_versions(crd: dict[str, Any]) -> list[ServedVersion]:
    """Every served version of ``crd`` as the emulator registers it."""
    spec = crd["spec"]
    names = spec["names"]
    served = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or spec.get("subresources") or {}
        scale = subresources.get("scale")
        columns = version.get("additionalPrinterColumns") or spec.get("additionalPrinterColumns")
        served.append(
            ServedVersion(
                resource=kmock.resource(spec["group"], version["name"], names["plural"]),
                info=kmock.ResourceInfo(
                    kind=names["kind"],
                    singular=names.get("singular") or names["kind"].lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs=set(ALL_VERBS),
                    shortnames=set(names.get("shortNames") or []),
                    categories=set(names.get("categories") or []),
                    subresources={name for name in ("status", "scale") if name in subresources},
                ),
                columns=list(columns) if columns else None,
                scale=None
                if scale is None
                else ScalePaths(
                    spec_replicas=scale["specReplicasPath"],
                    status_replicas=scale["statusReplicasPath"],
                    label_selector=scale.get("labelSelectorPath"),
                ),
                schema=(version.get("schema") or spec.get("validation") or {}).get(
                    "openAPIV3Schema"
                ),
            )
        )
    return served


def accepted_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """The status a real API server gives an accepted CRD (Established, NamesAccepted)."""
    spec = crd["spec"]
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": now, "message": ""}
        for kind, reason in (
            ("NamesAccepted", "NoConflicts"),
            ("Established", "InitialNamesAccepted"),
        )
    ]
    return {
        "acceptedNames": spec["names"],
        "conditions": conditions,
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


def stub_crd(
    group: str, version: str, kind: str, plural: str | None = None, *, namespaced: bool = True
) -> dict[str, Any]:
    """A schemaless CRD for a third-party kind (e.g. ServiceMonitor) a chart ships objects of."""
    plural = plural or kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
