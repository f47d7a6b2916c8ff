"""The ModelDeployment's status: phase, counts, per-worker lines and conditions with reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubechat.discovery.records import DEPLOYMENT_LABEL, WorkerRecord

from .failures import load_failure, summarize
from .reconcile import Decision, ObservedPod


def now_text() -> str:
    """The current time as a Kubernetes timestamp."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, true: bool, reason: str, message: str, previous: list[dict[str, Any]]
) -> dict[str, Any]:
    """A condition; its lastTransitionTime moves only when its status changes."""
    status = "True" if true else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else now_text()
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def invalid_spec_status(
    name: str,
    message: str,
    pods: list[ObservedPod],
    leases: dict[str, WorkerRecord],
    generation: int | None,
    previous: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """Status of a ModelDeployment whose spec cannot be served: nothing is changed in the
    cluster; the condition says what to fix. Counts and workers still describe the pods that
    run (status is merge-patched: a field left out would keep its stale value)."""
    old = previous.get("conditions") or []
    alive = [p for p in pods if not p.terminating]
    ready = [p for p in alive if p.ready]
    failed = summarize(f for p in alive if (f := load_failure(p)) is not None)
    return {
        "phase": "Failed",
        **observed_fields(name, alive, leases, now),
        "observedGeneration": generation,
        "conditions": [
            condition("InvalidSpec", True, "InvalidSpec", message, old),
            condition(
                "Available",
                bool(ready),
                "WorkersReady" if ready else "InvalidSpec",
                f"{len(ready)} workers of the last valid spec ready; the spec is invalid",
                old,
            ),
            condition(
                "ModelLoadFailed",
                failed is not None,
                *(failed or ("NoFailure", "no worker failed to load its model")),
                old,
            ),
        ],
    }


def observed_fields(
    name: str, alive: list[ObservedPod], leases: dict[str, WorkerRecord], now: float
) -> dict[str, Any]:
    """``replicas``, ``readyReplicas``, ``selector`` and ``workers`` of the pods that stay."""
    return {
        "replicas": len(alive),
        "readyReplicas": sum(p.ready for p in alive),
        "selector": f"{DEPLOYMENT_LABEL}={name}",
        "workers": [worker_line(p, leases.get(p.name), now) for p in sorted(alive, key=_name)],
    }


def _name(pod: ObservedPod) -> str:
    return pod.name


def worker_line(pod: ObservedPod, lease: WorkerRecord | None, now: float) -> dict[str, Any]:
    """One ``status.workers[]`` entry. A pod that has not written its Lease yet has no
    ``lastHeartbeat`` (a date-time field: the API server refuses an empty string there, and
    with it the whole status patch) and a heartbeat age of -1."""
    line: dict[str, Any] = {
        "pod": pod.name,
        "address": lease.address if lease else "",
        "ready": pod.ready,
        "heartbeatAgeSeconds": round(lease.age(now), 1) if lease else -1,
        "load": {
            "inFlight": lease.in_flight if lease else 0,
            "queued": lease.queued if lease else 0,
            "capacity": lease.capacity if lease else 0,
        },
    }
    if lease is not None:
        line["lastHeartbeat"] = _time_text(lease.renew_time)
    return line


def build_status(
    name: str,
    replicas: int,
    template_hash: str,
    pods: list[ObservedPod],
    leases: dict[str, WorkerRecord],
    decision: Decision,
    generation: int | None,
    previous: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """Status after a reconcile pass over ``pods`` (as observed before the pass acted)."""
    old = previous.get("conditions") or []
    alive = [p for p in pods if not p.terminating and p.name not in decision.delete]
    ready = [p for p in alive if p.ready]
    updated = [p for p in alive if p.template_hash == template_hash]
    failed_loads = [f for p in alive if (f := load_failure(p)) is not None]
    rolling = any(p.template_hash != template_hash for p in alive)
    settled = len(updated) == replicas and len(ready) == replicas and not rolling
    if failed_loads:
        phase = "Failed" if not ready else "Degraded"
    elif replicas == 0:
        phase = "ScaledDown" if not alive else "Progressing"
    elif settled:
        phase = "Running"
    elif ready:
        phase = "Progressing" if (rolling or len(alive) != replicas) else "Degraded"
    else:
        phase = "Pending"
    progress_reason = (
        "RollingUpdate"
        if rolling
        else "Scaling"
        if len(alive) != replicas
        else "WaitingForReady"
        if len(ready) < replicas
        else "Complete"
    )
    lost = decision.heartbeat_lost
    load_reason, load_message = summarize(failed_loads) or (
        "NoFailure",
        "no worker failed to load its model",
    )
    conditions = [
        condition(
            "Available",
            bool(ready),
            "WorkersReady" if ready else "NoReadyWorker",
            f"{len(ready)} of {replicas} workers ready",
            old,
        ),
        condition(
            "Progressing",
            progress_reason != "Complete",
            progress_reason,
            f"{len(updated)} of {replicas} workers on template {template_hash}",
            old,
        ),
        condition(
            "ModelLoadFailed",
            bool(failed_loads),
            load_reason,
            load_message,
            old,
        ),
        condition(
            "HeartbeatLost",
            bool(lost),
            "LeaseExpired" if lost else "LeasesFresh",
            f"replacing {', '.join(lost)}: Ready but lease not renewed"
            if lost
            else "every ready worker renews its lease",
            old,
        ),
        condition("InvalidSpec", False, "Valid", "the spec is valid", old),
    ]
    return {
        "phase": phase,
        **observed_fields(name, alive, leases, now),
        "observedGeneration": generation,
        "conditions": conditions,
    }
