"""Worker records as ``coordination.k8s.io/v1`` Leases, combined with their Pods' readiness.

Writer side (a worker in a pod): ``publish`` creates or updates the Lease named after the pod,
owned by the pod (so it is garbage-collected with it) and labelled with the deployment;
``remove`` deletes it on a clean exit.

Reader side (the gateway, the UI): ``start`` runs a list + watch of worker Leases and Pods in a
background thread, re-listing every ``relist_seconds`` and on every reconnect, so a watch that
silently dropped events cannot keep a dead worker routable. ``snapshot`` joins the two: a record
counts as ready only while its pod's Ready condition is True. Freshness is judged at read time
from the renew time, so a worker that stops renewing leaves routing within its lease duration
while the API server is reachable.

While the reader is cut off from the API server (its Lease list or watch fails), it cannot see
renewals either: every lease would look expired after one lease duration and the gateway would
refuse all traffic although the workers are fine (a control-plane upgrade, an API server
restart, a network blip). So lease ages are judged as of the last moment the reader was in
touch, for at most ``outage_grace`` seconds: the last known workers stay routable (a dead one
refuses the connection and the gateway tries another), and the re-list after the reconnect
brings in what changed meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from .records import DEPLOYMENT_LABEL, WorkerRecord

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WORKER_SELECTOR = DEPLOYMENT_LABEL  # every worker pod and lease carries this label


def api_client() -> kubernetes.client.ApiClient:
    """A client from the in-cluster service account, else from the kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=config)
        return kubernetes.client.ApiClient(config)
    path = os.environ.get("KUBECONFIG") or None
    return kubernetes.config.new_client_from_config(config_file=path)


def current_namespace() -> str:
    """$POD_NAMESPACE, else the service account's namespace, else the kubeconfig's, else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        _, active = kubernetes.config.list_kube_config_contexts(
            config_file=os.environ.get("KUBECONFIG") or None
        )
        return active.get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig at all
        return "default"


def pod_is_ready(pod: dict[str, Any]) -> bool:
    """Whether a pod (as a dict) is Ready and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


class KubernetesLeaseStore:
    """Leases in ``namespace`` (default: this pod's); a LeaseWriter and a WorkerSource.

    ``api_client``: an official ``kubernetes`` client (default: in-cluster, else the kubeconfig);
    ``pod_name``: the worker's pod, owner of its Lease (default: $POD_NAME).
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        api_client: kubernetes.client.ApiClient | None = None,
        relist_seconds: float = 10.0,
        pod_name: str | None = None,
        outage_grace: float = 300.0,
    ) -> None:
        self.namespace = namespace or current_namespace()
        self._api = api_client
        self.relist_seconds = relist_seconds
        self.outage_grace = outage_grace
        self.pod_name = pod_name or os.environ.get("POD_NAME")
        self._owner: dict[str, Any] | None = None
        self._created: set[str] = set()
        # parsed as they arrive: the gateway asks for a snapshot on every request
        self._leases: dict[str, WorkerRecord] = {}
        self._pods: dict[str, bool] = {}  # pod name -> Ready
        self._changes = 0
        self._cached: tuple[int, list[WorkerRecord]] | None = None
        # when the Lease list or watch last answered; since when it has been failing (or None)
        self._leases_seen: float | None = None
        self._leases_lost: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[kubernetes.watch.Watch] = []

    @property
    def api(self) -> kubernetes.client.ApiClient:
        """The API client, made on first use (workers without a store never need one)."""
        if self._api is None:
            self._api = api_client()
        return self._api

    # ---- worker side --------------------------------------------------------------------------
    def publish(self, record: WorkerRecord) -> None:
        """Create this worker's Lease, or update it in place on later renewals; a draining
        record only updates an existing Lease, never creates one.

        Updates are merge patches: the API refuses a Lease update (PUT) that carries no
        resourceVersion, and a patch needs none, so a renewal is one request whatever else
        touched the Lease.
        """
        body = record.to_lease(self.namespace)
        owner = self._pod_owner()
        if owner is not None:
            body["metadata"]["ownerReferences"] = [owner]
        leases = kubernetes.client.CoordinationV1Api(self.api)
        if record.draining:
            # On its way out, a worker only updates a Lease that exists. Gone means deleted by
            # the operator (its deployment is being deleted) or never written: created again,
            # it would outlive the pod wherever garbage collection is slow or off.
            try:
                self._patch(leases, record.name, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._created.discard(record.name)
            return
        if record.name in self._created:
            try:
                self._patch(leases, record.name, body)
                return
            except ApiException as exc:
                if exc.status != 404:  # deleted under us while serving: create it again
                    raise
        try:
            leases.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # left by an earlier run of this pod's worker
                raise
            self._patch(leases, record.name, body)
        self._created.add(record.name)

    def _patch(
        self, leases: kubernetes.client.CoordinationV1Api, name: str, body: dict[str, Any]
    ) -> None:
        leases.patch_namespaced_lease(
            name, self.namespace, body, _content_type="application/merge-patch+json"
        )

    def remove(self, name: str) -> None:
        """Delete worker ``name``'s Lease; nothing happens if it is absent."""
        try:
            kubernetes.client.CoordinationV1Api(self.api).delete_namespaced_lease(
                name, self.namespace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._created.discard(name)

    def _pod_owner(self) -> dict[str, Any] | None:
        """An ownerReference to this worker's pod (read once), or None outside a pod."""
        if self._owner is None and self.pod_name:
            pod = kubernetes.client.CoreV1Api(self.api).read_namespaced_pod(
                self.pod_name, self.namespace
            )
            self._owner = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.pod_name,
                "uid": pod.metadata.uid,
                "blockOwnerDeletion": False,
            }
        return self._owner

    # ---- reader side --------------------------------------------------------------------------
    def snapshot(self) -> list[WorkerRecord]:
        """Every worker Lease as a record, ready only while its pod is Ready; while the Leases
        cannot be listed or watched, renew times are moved on by the time since the reader lost
        touch (at most ``outage_grace``), so lease ages stay as they were last seen."""
        with self._lock:
            lost = self._leases_lost
            if self._cached is not None and self._cached[0] == self._changes:
                records = self._cached[1]
                return list(records) if lost is None else self._as_of(records, lost)
            changes = self._changes
            leases = list(self._leases.values())
            pods = dict(self._pods)
        records = sorted(
            (
                r if not r.ready or pods.get(r.name) else dataclasses.replace(r, ready=False)
                for r in leases
            ),
            key=lambda r: r.name,
        )
        with self._lock:
            self._cached = (changes, records)
        return list(records) if lost is None else self._as_of(records, lost)

    def _as_of(self, records: list[WorkerRecord], lost: float) -> list[WorkerRecord]:
        """``records`` aged only up to ``lost``, the last time the Leases were seen."""
        blind = min(max(0.0, time.time() - lost), self.outage_grace)
        return [dataclasses.replace(r, renew_time=r.renew_time + blind) for r in records]

    async def start(self) -> None:
        """List and watch Leases and Pods in background threads.

        An API server that cannot be reached yet is not fatal: the watch threads keep
        re-listing until it answers, and until then no worker is known.
        """
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as exc:
            log.warning("listing workers failed (%r); retrying in the background", exc)
        for kind in ("leases", "pods"):
            thread = threading.Thread(
                target=self._watch_loop, args=(kind,), name=f"watch-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        """Stop the watches."""
        self._stop.set()
        for watch in list(self._watches):
            watch.stop()

    def refresh(self) -> None:
        """List both kinds now (also what each re-list does)."""
        for kind in ("leases", "pods"):
            self._list(kind)

    def _list_fn(self, kind: str):
        if kind == "leases":
            return kubernetes.client.CoordinationV1Api(self.api).list_namespaced_lease
        return kubernetes.client.CoreV1Api(self.api).list_namespaced_pod

    def _list(self, kind: str) -> str:
        result = self._list_fn(kind)(
            self.namespace,
            label_selector=WORKER_SELECTOR,
            _preload_content=False,
            _request_timeout=self.relist_seconds + 5,  # an API server that never answers
        )
        data = json.loads(result.data)
        items = {}
        for item in data.get("items") or []:
            value = _parse(kind, item)
            if value is not None:
                items[item["metadata"]["name"]] = value
        with self._lock:
            if kind == "leases":
                self._leases = items
                self._leases_seen, self._leases_lost = time.time(), None
            else:
                self._pods = items
            self._changes += 1
        return (data.get("metadata") or {}).get("resourceVersion") or ""

    def _watch_loop(self, kind: str) -> None:
        while not self._stop.is_set():
            listed = False
            try:
                version = self._list(kind)
                listed = True
                watch = kubernetes.watch.Watch()
                self._watches.append(watch)
                try:
                    for event in watch.stream(
                        self._list_fn(kind),
                        self.namespace,
                        label_selector=WORKER_SELECTOR,
                        resource_version=version,
                        timeout_seconds=max(1, int(self.relist_seconds)),
                        _request_timeout=self.relist_seconds + 5,
                    ):
                        self._apply(kind, event)
                        if self._stop.is_set():
                            break
                finally:
                    self._watches.remove(watch)
                self._touch(kind)  # the stream ended in order: the view was current until now
            except Exception as exc:  # API down or watch broken: re-list after a pause
                if self._stop.is_set():
                    return
                if listed:  # the watch broke: in touch until now
                    self._touch(kind)
                self._lose(kind)
                log.warning("watching %s failed (%r); re-listing", kind, exc)
                self._stop.wait(1.0)

    def _touch(self, kind: str) -> None:
        """The API answered about ``kind`` just now."""
        if kind == "leases":
            with self._lock:
                if self._leases_lost is None:
                    self._leases_seen = time.time()

    def _lose(self, kind: str) -> None:
        """Listing or watching ``kind`` failed: the view is as of the last answer."""
        if kind == "leases":
            with self._lock:
                if self._leases_lost is None and self._leases_seen is not None:
                    self._leases_lost = self._leases_seen

    def _apply(self, kind: str, event: dict[str, Any]) -> None:
        obj = event.get("raw_object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if not name or event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return
        value = None if event["type"] == "DELETED" else _parse(kind, obj)
        with self._lock:
            if kind == "leases":
                self._leases_seen = time.time()
            table: dict[str, Any] = self._leases if kind == "leases" else self._pods
            if value is None:
                table.pop(name, None)
            else:
                table[name] = value
            self._changes += 1


def _parse(kind: str, obj: dict[str, Any]) -> WorkerRecord | bool | None:
    """A Lease as a record (None when unreadable), a Pod as whether it is Ready."""
    if kind == "pods":
        return pod_is_ready(obj)
    try:
        return WorkerRecord.from_lease(obj)
    except ValueError as exc:
        log.debug("skipping lease: %s", exc)
        return None
