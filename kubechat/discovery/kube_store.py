"""Worker records as ``coordination.k8s.io/v1`` Leases, combined with their Pods' readiness.

Writer side (a worker in a pod): ``publish`` creates or updates the Lease named after the pod,
owned by the pod (so it is garbage-collected with it) and labelled with the deployment;
``remove`` deletes it on a clean exit.

Reader side (the gateway, the UI): ``start`` runs a list + watch of worker Leases and Pods in
background threads, re-listing every ``relist_seconds`` and on every reconnect, so a watch that
silently dropped events cannot keep a dead worker routable. A reader watches one namespace,
several (one list + watch pair each, for an operator given several ``--namespace``), or all of
them (``ALL_NAMESPACES``: one cluster-wide list + watch, for a cluster-wide operator).
``snapshot`` joins the two: a record counts as ready only while its pod's Ready condition is
True. Freshness is judged at read time from the renew time, so a worker that stops renewing
leaves routing within its lease duration while the API server is reachable.

While the reader is cut off from the API server (a Lease list or watch fails), it cannot see
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from .records import DEPLOYMENT_LABEL, WorkerRecord

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WORKER_SELECTOR = DEPLOYMENT_LABEL  # every worker pod and lease carries this label
ALL_NAMESPACES = "*"
KINDS = ("leases", "pods")

Scope = str | None  # a namespace, or None: every namespace
ObjectKey = tuple[str, str]  # (namespace, name)


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

    ``read_namespaces``: what a reader lists and watches instead of ``namespace`` alone:
    namespaces, or ``[ALL_NAMESPACES]`` for the whole cluster (a writer always writes in
    ``namespace``). ``api_client``: an official ``kubernetes`` client (default: in-cluster, else
    the kubeconfig); ``pod_name``: the worker's pod, owner of its Lease (default: $POD_NAME).
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        read_namespaces: Sequence[str] | None = None,
        api_client: kubernetes.client.ApiClient | None = None,
        relist_seconds: float = 10.0,
        pod_name: str | None = None,
        outage_grace: float = 300.0,
    ) -> None:
        self.namespace = namespace or current_namespace()
        wanted = list(dict.fromkeys(read_namespaces or [self.namespace]))
        self.scopes: list[Scope] = [None] if ALL_NAMESPACES in wanted else wanted
        self._api = api_client
        self.relist_seconds = relist_seconds
        self.outage_grace = outage_grace
        self.pod_name = pod_name or os.environ.get("POD_NAME")
        self._owner: dict[str, Any] | None = None
        self._created: set[str] = set()
        # parsed as they arrive, per scope: the gateway asks for a snapshot on every request
        self._leases: dict[Scope, dict[ObjectKey, WorkerRecord]] = {s: {} for s in self.scopes}
        self._pods: dict[Scope, dict[ObjectKey, bool]] = {s: {} for s in self.scopes}  # Ready
        self._changes = 0
        self._cached: tuple[int, list[tuple[Scope, WorkerRecord]]] | None = None
        # per scope: when its Lease list or watch last answered; since when it has been failing
        self._leases_seen: dict[Scope, float | None] = dict.fromkeys(self.scopes)
        self._leases_lost: dict[Scope, float | None] = dict.fromkeys(self.scopes)
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
        """Every worker Lease as a record, ready only while its pod is Ready; while a scope's
        Leases cannot be listed or watched, their renew times are moved on by the time since
        the reader lost touch (at most ``outage_grace``), so lease ages stay as last seen."""
        with self._lock:
            lost = {s: t for s, t in self._leases_lost.items() if t is not None}
            if self._cached is None or self._cached[0] != self._changes:
                self._cached = (self._changes, self._joined())
            records = self._cached[1]
        if not lost:
            return [r for _, r in records]
        return [self._as_of(r, lost[s]) if s in lost else r for s, r in records]

    def _joined(self) -> list[tuple[Scope, WorkerRecord]]:
        """Leases with their pods' readiness, by name (called under the lock)."""
        pods: dict[ObjectKey, bool] = {}
        for table in self._pods.values():
            pods.update(table)
        joined = [
            (scope, r if not r.ready or pods.get(key) else dataclasses.replace(r, ready=False))
            for scope, table in self._leases.items()
            for key, r in table.items()
        ]
        return sorted(joined, key=lambda item: item[1].name)

    def _as_of(self, record: WorkerRecord, lost: float) -> WorkerRecord:
        """``record`` aged only up to ``lost``, the last time its Leases were seen."""
        blind = min(max(0.0, time.time() - lost), self.outage_grace)
        return dataclasses.replace(record, renew_time=record.renew_time + blind)

    async def start(self) -> None:
        """List and watch Leases and Pods in background threads (one per kind and scope).

        An API server that cannot be reached yet is not fatal: the watch threads keep
        re-listing until it answers, and until then no worker is known.
        """
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as exc:
            log.warning("listing workers failed (%r); retrying in the background", exc)
        for scope in self.scopes:
            for kind in KINDS:
                thread = threading.Thread(
                    target=self._watch_loop,
                    args=(kind, scope),
                    name=f"watch-{kind}-{scope or 'all'}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    async def stop(self) -> None:
        """Stop the watches."""
        self._stop.set()
        for watch in list(self._watches):
            watch.stop()

    def refresh(self) -> None:
        """List every kind in every scope now (also what each re-list does)."""
        for scope in self.scopes:
            for kind in KINDS:
                self._list(kind, scope)

    def _call(self, kind: str, scope: Scope) -> tuple[Any, tuple[str, ...]]:
        """The list function of ``kind`` in ``scope`` and its positional arguments."""
        if kind == "leases":
            api: Any = kubernetes.client.CoordinationV1Api(self.api)
            if scope is None:
                return api.list_lease_for_all_namespaces, ()
            return api.list_namespaced_lease, (scope,)
        api = kubernetes.client.CoreV1Api(self.api)
        if scope is None:
            return api.list_pod_for_all_namespaces, ()
        return api.list_namespaced_pod, (scope,)

    def _list(self, kind: str, scope: Scope) -> str:
        fn, args = self._call(kind, scope)
        result = fn(
            *args,
            label_selector=WORKER_SELECTOR,
            _preload_content=False,
            _request_timeout=self.relist_seconds + 5,  # an API server that never answers
        )
        data = json.loads(result.data)
        items = {}
        for item in data.get("items") or []:
            value = _parse(kind, item)
            if value is not None:
                items[_key(item)] = value
        with self._lock:
            if kind == "leases":
                self._leases[scope] = items
                self._leases_seen[scope], self._leases_lost[scope] = time.time(), None
            else:
                self._pods[scope] = items
            self._changes += 1
        return (data.get("metadata") or {}).get("resourceVersion") or ""

    def _watch_loop(self, kind: str, scope: Scope) -> None:
        while not self._stop.is_set():
            listed = False
            try:
                version = self._list(kind, scope)
                listed = True
                watch = kubernetes.watch.Watch()
                self._watches.append(watch)
                fn, args = self._call(kind, scope)
                try:
                    for event in watch.stream(
                        fn,
                        *args,
                        label_selector=WORKER_SELECTOR,
                        resource_version=version,
                        timeout_seconds=max(1, int(self.relist_seconds)),
                        _request_timeout=self.relist_seconds + 5,
                    ):
                        self._apply(kind, scope, event)
                        if self._stop.is_set():
                            break
                finally:
                    self._watches.remove(watch)
                self._touch(kind, scope)  # the stream ended in order: current until now
            except Exception as exc:  # API down or watch broken: re-list after a pause
                if self._stop.is_set():
                    return
                if listed:  # the watch broke: in touch until now
                    self._touch(kind, scope)
                self._lose(kind, scope)
                log.warning("watching %s in %s failed (%r); re-listing", kind, scope or "*", exc)
                self._stop.wait(1.0)

    def _touch(self, kind: str, scope: Scope) -> None:
        """The API answered about ``kind`` in ``scope`` just now."""
        if kind == "leases":
            with self._lock:
                if self._leases_lost[scope] is None:
                    self._leases_seen[scope] = time.time()

    def _lose(self, kind: str, scope: Scope) -> None:
        """Listing or watching ``kind`` failed: the view of ``scope`` is as of its last answer."""
        if kind == "leases":
            with self._lock:
                if self._leases_lost[scope] is None and self._leases_seen[scope] is not None:
                    self._leases_lost[scope] = self._leases_seen[scope]

    def _apply(self, kind: str, scope: Scope, event: dict[str, Any]) -> None:
        obj = event.get("raw_object") or {}
        if not (obj.get("metadata") or {}).get("name"):
            return
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return
        value = None if event["type"] == "DELETED" else _parse(kind, obj)
        with self._lock:
            if kind == "leases":
                self._leases_seen[scope] = time.time()
            table: dict[ObjectKey, Any] = (self._leases if kind == "leases" else self._pods)[scope]
            if value is None:
                table.pop(_key(obj), None)
            else:
                table[_key(obj)] = value
            self._changes += 1


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta["name"]


def _parse(kind: str, obj: dict[str, Any]) -> WorkerRecord | bool | None:
    """A Lease as a record (None when unreadable), a Pod as whether it is Ready."""
    if kind == "pods":
        return pod_is_ready(obj)
    try:
        return WorkerRecord.from_lease(obj)
    except ValueError as exc:
        log.debug("skipping lease: %s", exc)
        return None
