"""API discovery as kubectl and kopf read it, replacing kmock 0.8's answers where they fall short.

kmock says ``groupVersion: /v1`` for the core group (kubectl then finds no ``pods``), gives
subresources no kinds of their own (``kubectl scale`` needs ``autoscaling/v1 Scale``) and picks a
group's preferred version at random. The mixin answers ``/apis``, ``/apis/G`` and ``/api/v1`` /
``/apis/G/V`` from the emulator's ``resources`` instead.
"""

from __future__ import annotations

import re
from typing import Any

import kmock

from tests.support.kube_crds import ALL_VERBS

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_rank(version: str) -> tuple[int, int, int]:
    """Kubernetes' version priority: GA before beta before alpha, higher numbers first."""
    match = _VERSION.match(version)
    if match is None:
        return (-1, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[match.group(2)]
    return (stability, int(match.group(1)), int(match.group(3) or 0))


def resource_entries(resource: kmock.resource, info: kmock.ResourceInfo) -> list[dict[str, Any]]:
    """The APIResourceList entries of a resource and its subresources."""
    base = {"name": resource.plural, "namespaced": bool(info.namespaced), "kind": info.kind}
    entries = [
        base
        | {
            "singularName": info.singular or (info.kind or "").lower(),
            "verbs": sorted(info.verbs or ALL_VERBS),
            "shortNames": sorted(info.shortnames),
            "categories": sorted(info.categories),
        }
    ]
    for sub in sorted(info.subresources):
        entry = base | {"name": f"{resource.plural}/{sub}", "singularName": ""}
        entry["verbs"] = ["get", "patch", "update"] if sub in ("status", "scale") else ["get"]
        if sub == "scale":
            entry |= {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        entries.append(entry)
    return entries


class DiscoveryMixin:
    """Overrides of kmock's discovery handlers; mixed into the emulator before kmock's class."""

    __slots__ = ()
    resources: kmock.ResourcesArray

    def _versions_by_group(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        for resource in self.resources:
            if resource.group:
                groups.setdefault(resource.group, set()).add(resource.version)
        return {g: sorted(v, key=version_rank, reverse=True) for g, v in groups.items()}

    @staticmethod
    def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    async def _serve_apis(self, request: kmock.Request) -> dict[str, Any]:
        groups = self._versions_by_group()
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_entry(g, v) for g, v in sorted(groups.items())],
        }

    async def _serve_group(self, request: kmock.Request) -> dict[str, Any]:
        group = request.resource.group if request.resource is not None else None
        versions = self._versions_by_group().get(group or "")
        if not versions:
            raise kmock.KubernetesResourceNotFoundError()
        return {"kind": "APIGroup", "apiVersion": "v1"} | self._group_entry(group or "", versions)

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None  # the path matched /api/V or /apis/G/V
        group, version = request.resource.group or "", request.resource.version
        entries = [
            entry
            for resource in sorted(self.resources, key=lambda r: r.plural or "")
            if (resource.group, resource.version) == (group, version)
            for entry in resource_entries(resource, self.resources[resource])
        ]
        if not entries:
            raise kmock.KubernetesResourceNotFoundError()
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }
