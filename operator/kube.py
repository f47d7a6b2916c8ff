"""The one module of the operator that talks to the Kubernetes API (official client, dicts)."""

from __future__ import annotations

import json
import logging
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from kubechat.discovery.kube_store import api_client
from kubechat.discovery.records import DEPLOYMENT_LABEL, WorkerRecord
from kubechat.spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


class Cluster:
    """Pods, Leases and ModelDeployment status in the cluster the operator runs against."""

    def __init__(self, api: kubernetes.client.ApiClient | None = None) -> None:
        self.api = api or api_client()
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.leases = kubernetes.client.CoordinationV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)

    def worker_pods(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The deployment's worker pods (terminating ones included)."""
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"{DEPLOYMENT_LABEL}={deployment}", _preload_content=False
        )
        return json.loads(response.data).get("items") or []

    def worker_leases(self, namespace: str, deployment: str) -> dict[str, WorkerRecord]:
        """The deployment's worker leases as records, by name (unreadable ones skipped)."""
        records = {}
        for lease in self._lease_items(namespace, deployment):
            try:
                record = WorkerRecord.from_lease(lease)
            except ValueError as exc:
                log.warning("ignoring lease: %s", exc)
                continue
            records[record.name] = record
        return records

    def _lease_items(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The Leases labelled with the deployment, as the API returns them."""
        response = self.leases.list_namespaced_lease(
            namespace, label_selector=f"{DEPLOYMENT_LABEL}={deployment}", _preload_content=False
        )
        return json.loads(response.data).get("items") or []

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        """Create a pod."""
        self.core.create_namespaced_pod(namespace, pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (its worker drains on SIGTERM within the grace period); 404 is fine."""
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_workers(self, namespace: str, deployment: str) -> int:
        """Delete every pod and every lease labelled with the deployment (readable as a worker
        record or not); returns how many objects were deleted."""
        count = 0
        for pod in self.worker_pods(namespace, deployment):
            self.delete_pod(namespace, pod["metadata"]["name"])
            count += 1
        for lease in self._lease_items(namespace, deployment):
            name = lease["metadata"]["name"]
            try:
                self.leases.delete_namespaced_lease(name, namespace)
                count += 1
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return count

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace the ModelDeployment's status fields with ``status`` (merge patch)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
