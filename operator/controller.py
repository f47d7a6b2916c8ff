"""One reconcile pass for one ModelDeployment: observe, decide, act, report.

spec -> plan (shared with ``kubechat up``) -> decision (pure) -> pods created/deleted -> status.
An invalid spec changes nothing in the cluster; it becomes the InvalidSpec condition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubechat.autoscale import AutoscaleState, decide_replicas, observed_load, scalable_plan
from kubechat.discovery.demand import demand_time
from kubechat.discovery.records import WorkerRecord
from kubechat.spec import ModelDeployment, SpecError, parse_model_deployment

from .kube import Cluster
from .pods import PodSettings, pod_name, render_pod
from .reconcile import ObservedPod, decide
from .status import build_status, invalid_spec_status

log = logging.getLogger(__name__)

# (object body, event type "Normal"/"Warning", reason, message)
EventSink = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class ControllerSettings:
    """Operator-wide settings."""

    pods: PodSettings = field(default_factory=PodSettings)
    lease_grace: float = 120.0  # a Ready pod may go this long without any lease
    heartbeat_timeout: float = 30.0  # ... and this long without renewing it
    # A status that differs only in heartbeat times and load is written at most this often.
    status_refresh: float = 30.0


class Controller:
    """Reconciles ModelDeployments; safe to call from several threads (one pass per object)."""

    def __init__(self, cluster: Cluster, settings: ControllerSettings, events: EventSink) -> None:
        self.cluster = cluster
        self.settings = settings
        self.events = events
        self._locks: dict[str, threading.Lock] = {}
        self._written: dict[str, float] = {}  # uid -> when its status was last written
        self._guard = threading.Lock()

    def _lock(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def reconcile(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Run one pass over ``body`` (a ModelDeployment as the API returns it); returns the
        status written. A ModelDeployment being deleted is left to the deletion handler: a
        pass racing with it must not create pods the handler has just removed."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return dict(body.get("status") or {})
        with self._lock(meta["uid"]):
            return self._reconcile(body)

    def forget(self, uid: str) -> None:
        """Drop per-object state of a deleted ModelDeployment."""
        with self._guard:
            self._locks.pop(uid, None)
            self._written.pop(uid, None)

    def _observe(
        self, namespace: str, name: str
    ) -> tuple[list[ObservedPod], dict[str, WorkerRecord], float]:
        """The deployment's pods and leases as they are now, and when that was."""
        pods = [ObservedPod.from_pod(p) for p in self.cluster.worker_pods(namespace, name)]
        return pods, self.cluster.worker_leases(namespace, name), time.time()

    def _reconcile(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        previous = dict(body.get("status") or {})
        generation = meta.get("generation")
        try:
            md = parse_model_deployment(_plain(body))
        except SpecError as exc:
            pods, leases, now = self._observe(namespace, name)
            status = invalid_spec_status(name, str(exc), pods, leases, generation, previous, now)
            if not _was_true(previous, "InvalidSpec"):
                self.events(body, "Warning", "InvalidSpec", str(exc)[:1000])
            self._write_status(body, status, previous)
            return status

        plan = scalable_plan(md)
        pods, leases, now = self._observe(namespace, name)
        replicas, scaling = self._desired(body, md, pods, leases, previous, now)
        decision = decide(
            replicas,
            plan.template_hash,
            pods,
            leases,
            now=now,
            lease_grace=self.settings.lease_grace,
            heartbeat_timeout=self.settings.heartbeat_timeout,
        )
        for pod in decision.delete:
            reason = decision.reasons.get(pod, "")
            kind = "Warning" if pod in decision.heartbeat_lost else "Normal"
            event = "HeartbeatLost" if pod in decision.heartbeat_lost else "DeletingPod"
            self.events(body, kind, event, f"deleting pod {pod}: {reason}")
            self.cluster.delete_pod(namespace, pod)
        owner = {"name": name, "uid": meta["uid"]}
        for _ in range(decision.create):
            worker = plan.workers[0]
            new = pod_name(name, plan.template_hash)
            self.cluster.create_pod(
                namespace,
                render_pod(worker, new, owner, self.settings.pods, dict(md.metadata.labels)),
            )
            self.events(body, "Normal", "CreatedPod", f"created worker pod {new}")
        status = build_status(
            name,
            replicas,
            plan.template_hash,
            pods,
            leases,
            decision,
            generation,
            previous,
            now,
        )
        if status["phase"] != previous.get("phase"):
            self.events(
                body,
                "Warning" if status["phase"] in ("Failed", "Degraded") else "Normal",
                f"Phase{status['phase']}",
                f"phase {previous.get('phase') or '(new)'} -> {status['phase']}: "
                f"{status['readyReplicas']} of {replicas} workers ready",
            )
        if _true(status, "ModelLoadFailed") and not _was_true(previous, "ModelLoadFailed"):
            message = _message(status, "ModelLoadFailed")
            self.events(body, "Warning", "ModelLoadFailed", message)
        status = {**status, **scaling}
        self._write_status(body, status, previous)
        return status

    def _desired(
        self,
        body: Mapping[str, Any],
        md: ModelDeployment,
        pods: list[ObservedPod],
        leases: dict[str, WorkerRecord],
        previous: dict[str, Any],
        now: float,
    ) -> tuple[int, dict[str, Any]]:
        """The workers to aim at and the status fields that say why: ``spec.replicas``, or
        the autoscaler's decision from the leases' load, the demand annotation and the state
        the last pass left in status (an Event when it moves). A changed ``spec.replicas``
        (``kubectl scale``) is ignored while autoscaling is set, with an Event saying so."""
        spec = md.spec.autoscaling
        if spec is None:
            return md.spec.replicas, {"desiredReplicas": md.spec.replicas, "autoscaling": None}
        d = decide_replicas(
            spec,
            AutoscaleState.from_status(previous),
            observed_load(leases.values(), now),
            now,
            demand=demand_time(body["metadata"].get("annotations")),
            current=sum(not p.terminating for p in pods),
        )
        if d.scaled:
            self.events(body, "Normal", d.scaled, d.reason or "")
        seen = (previous.get("autoscaling") or {}).get("specReplicas")
        if seen is not None and seen != md.spec.replicas:
            self.events(
                body,
                "Warning",
                "ReplicasIgnored",
                f"spec.replicas changed to {md.spec.replicas} (kubectl scale?) and is ignored: "
                f"spec.autoscaling decides ({d.state.desired} now, between minReplicas "
                f"{spec.min_replicas} and maxReplicas {spec.max_replicas}); change those, or "
                "remove spec.autoscaling to set replicas by hand",
            )
        state = {**d.state.to_status(), "specReplicas": md.spec.replicas}
        return d.state.desired, {"desiredReplicas": d.state.desired, "autoscaling": state}

    def _write_status(
        self, body: Mapping[str, Any], status: dict[str, Any], previous: dict[str, Any]
    ) -> bool:
        """Patch ``status`` unless it differs from ``previous`` only in heartbeat times and
        load and was written less than ``status_refresh`` seconds ago; True if written.

        Every pass (a timer tick every few seconds) sees lease ages move: writing them each
        time would make every ModelDeployment a steady stream of API writes and watch events
        for nothing anyone acts on. A restarted operator writes on its first pass."""
        meta = body["metadata"]
        now = time.monotonic()
        last = self._written.get(meta["uid"])
        fresh = last is not None and now - last < self.settings.status_refresh
        written_before = {k: previous.get(k) for k in status}  # a merge patch keeps the rest
        if fresh and _settled(status) == _settled(written_before):
            return False
        self.cluster.patch_status(meta.get("namespace") or "default", meta["name"], status)
        self._written[meta["uid"]] = now
        return True


VOLATILE_WORKER_FIELDS = ("lastHeartbeat", "heartbeatAgeSeconds", "load")
# the autoscaler's load average moves on every pass; a pass that finds it unwritten averages
# from the last written sample instead, over the longer time since
VOLATILE_AUTOSCALING_FIELDS = ("averageLoad", "lastSampleTime")


def _settled(status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` without what changes on every renewal: heartbeat times and load."""
    workers = [
        {k: v for k, v in w.items() if k not in VOLATILE_WORKER_FIELDS}
        for w in status.get("workers") or []
    ]
    settled = {**_unwrap(status), "workers": workers}
    if isinstance(settled.get("autoscaling"), dict):
        settled["autoscaling"] = {
            k: v
            for k, v in settled["autoscaling"].items()
            if k not in VOLATILE_AUTOSCALING_FIELDS and v is not None  # None: absent
        }
    return settled


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """The object without status, as plain dicts (kopf hands out read-only views)."""
    return {k: _unwrap(v) for k, v in body.items() if k != "status"}


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unwrap(v) for v in value]
    return value


def _true(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


_was_true = _true


def _message(status: Mapping[str, Any], kind: str) -> str:
    return next(
        (c.get("message", "") for c in status.get("conditions") or [] if c.get("type") == kind), ""
    )
