"""Decide what to do from what is wanted and what is seen: pure functions, no API calls.

Every decision is made again from observed state on every pass (pods with their labels and
readiness, leases with their renew times), so an operator restarted at any moment picks up where
the last one stopped: no bookkeeping lives only in memory.

Rollout: one surge pod at a time; an old pod is deleted only while enough ready pods remain
(``ready - 1 >= replicas``), so ready workers never drop below what serves traffic. Scale-down
deletes pods that are not ready first, then the least-loaded ready ones (the worker drains on
SIGTERM before it exits).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubechat.discovery.records import WorkerRecord

from .pods import TEMPLATE_HASH_LABEL


@dataclass(frozen=True)
class ObservedPod:
    """A worker pod as the operator sees it."""

    name: str
    template_hash: str
    ready: bool
    phase: str
    created: float  # unix seconds
    terminating: bool = False
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_reason: str = ""  # the kubelet's: Error, OOMKilled, Completed, ...
    last_exit_message: str = ""  # the termination message (FallbackToLogsOnError: log tail)

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> ObservedPod:
        """Read the fields that matter from a Pod dict."""
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        restarts, exit_code, reason, message = 0, None, "", ""
        for cs in status.get("containerStatuses") or []:
            restarts += int(cs.get("restartCount") or 0)
            terminated = (cs.get("lastState") or {}).get("terminated") or {}
            if terminated:
                exit_code = terminated.get("exitCode")
                reason = terminated.get("reason") or ""
                message = terminated.get("message") or ""
        return cls(
            name=meta["name"],
            template_hash=(meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL, ""),
            ready=ready and not meta.get("deletionTimestamp"),
            phase=status.get("phase") or "Pending",
            created=_timestamp(meta.get("creationTimestamp")),
            terminating=bool(meta.get("deletionTimestamp")),
            restarts=restarts,
            last_exit_code=exit_code,
            last_exit_reason=reason,
            last_exit_message=message,
        )


@dataclass
class Decision:
    """What one reconcile pass does."""

    create: int = 0
    delete: list[str] = field(default_factory=list)
    heartbeat_lost: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # pod -> why it is deleted


def heartbeat_lost(
    pod: ObservedPod,
    lease: WorkerRecord | None,
    now: float,
    grace: float,
    timeout: float = 0.0,
) -> bool:
    """A pod that reports Ready while its lease has not been renewed for ``timeout`` seconds
    (at least the lease's own duration), or was never written after ``grace`` seconds: its
    worker is hung or cut off and must be replaced.

    Routing stops at lease expiry already; replacing a pod throws its loaded model away, so it
    waits longer, which also rides out a short API outage or a few seconds of clock skew.
    """
    if not pod.ready or pod.terminating:
        return False
    if lease is None:
        return now - pod.created > grace
    return lease.age(now) > max(lease.lease_duration, timeout)


def decide(
    replicas: int,
    template_hash: str,
    pods: list[ObservedPod],
    leases: dict[str, WorkerRecord],
    now: float | None = None,
    lease_grace: float = 60.0,
    heartbeat_timeout: float = 0.0,
) -> Decision:
    """The creates and deletes that move ``pods`` toward ``replicas`` pods of ``template_hash``.

    ``lease_grace`` and ``heartbeat_timeout``: see :func:`heartbeat_lost`.
    """
    now = time.time() if now is None else now
    d = Decision()
    alive = [p for p in pods if not p.terminating]
    for p in alive:
        if p.phase in ("Failed", "Succeeded"):
            d.delete.append(p.name)
            d.reasons[p.name] = f"pod {p.phase.lower()}"
        elif heartbeat_lost(p, leases.get(p.name), now, lease_grace, heartbeat_timeout):
            d.delete.append(p.name)
            d.heartbeat_lost.append(p.name)
            d.reasons[p.name] = "heartbeat lost: lease not renewed"
    alive = [p for p in alive if p.name not in d.delete]
    current = [p for p in alive if p.template_hash == template_hash]
    old = [p for p in alive if p.template_hash != template_hash]
    ready_total = sum(p.ready for p in alive)

    # old pods that do not serve go at once; a serving one only while enough others are ready
    for p in sorted(old, key=lambda p: (p.ready, p.created)):
        if not p.ready:
            d.delete.append(p.name)
            d.reasons[p.name] = "rolling update"
        elif ready_total - 1 >= replicas and sum(c.ready for c in current) > 0:
            d.delete.append(p.name)
            d.reasons[p.name] = "rolling update"
            ready_total -= 1
    old_left = [p for p in old if p.name not in d.delete]

    if len(current) < replicas:
        if not old_left:
            d.create = replicas - len(current)
        elif all(c.ready for c in current):
            d.create = 1  # rolling: one surge pod at a time, the next once it is ready
    elif len(current) > replicas and not old_left:
        surplus = len(current) - replicas

        def load(p: ObservedPod) -> tuple[int, float, int]:
            lease = leases.get(p.name)
            busy = lease.in_flight + lease.queued if lease else 0
            return (p.ready, busy, -p.created)

        for p in sorted(current, key=load)[:surplus]:
            d.delete.append(p.name)
            d.reasons[p.name] = "scale down"
    return d


def _timestamp(text: str | None) -> float:
    if not text:
        return time.time()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
