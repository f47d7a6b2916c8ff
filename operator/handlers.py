"""kopf wiring: every change, every resume and a periodic timer run the same reconcile pass;
deletion (behind kopf's finalizer) removes the deployment's pods and leases itself, and keeps
the finalizer until the last pod has stopped."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubechat.spec import GROUP, PLURAL, VERSION

from .controller import Controller
from .metrics import OperatorMetrics

log = logging.getLogger(__name__)


def register(
    registry: kopf.OperatorRegistry,
    controller: Controller,
    interval: float,
    metrics: OperatorMetrics | None = None,
) -> None:
    """Register the handlers of ``controller`` in ``registry``; the timer runs every
    ``interval`` seconds (how soon a stale lease or a dead pod is acted upon). Passes and
    failures are counted in ``metrics`` (a registry of their own by default)."""
    metrics = metrics or OperatorMetrics()

    def run(body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        if not meta.get("deletionTimestamp"):
            metrics.deployment(meta.get("namespace") or "default", meta["name"], *_wanted(body))
        try:
            with metrics.reconcile() as outcome:
                status = controller.reconcile(body)
                if _invalid(status):
                    outcome[0] = "invalid"
            if not meta.get("deletionTimestamp"):
                metrics.observed(
                    meta.get("namespace") or "default",
                    meta["name"],
                    status.get("desiredReplicas"),
                    status.get("readyReplicas"),
                )
        except Exception as exc:
            log.exception("reconcile of %s failed", body["metadata"].get("name"))
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=interval) from exc

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in-cluster service account, else $KUBECONFIG / ~/.kube/config (the official client's)
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    def changed(body: kopf.Body, **_: Any) -> None:
        run(body)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=interval, registry=registry)
    def periodic(body: kopf.Body, **_: Any) -> None:
        run(body)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(name: str, namespace: str, uid: str, **_: Any) -> None:
        # Pods and leases are deleted on every try; the finalizer goes only once no pod is
        # left, so a lease renewed by a worker still draining is deleted by a later try.
        try:
            removed = controller.cluster.delete_workers(namespace or "default", name)
            stopping = controller.cluster.worker_pods(namespace or "default", name)
        except Exception:
            metrics.errors.inc()
            raise
        if stopping:
            raise kopf.TemporaryError(
                f"waiting for {len(stopping)} worker pods of {name} to stop", delay=interval
            )
        controller.forget(uid)
        metrics.forget_deployment(namespace or "default", name)
        log.info("deleted %s: removed %d pods and leases", name, removed)


def _wanted(body: Mapping[str, Any]) -> tuple[int, list[str]]:
    """The replicas and served model names a ModelDeployment asks for, as written (also for
    a spec kubechat cannot serve: its models are still wanted). An autoscaled one asks for what
    the autoscaler last decided (minReplicas before its first decision): at zero, no worker is
    missing."""
    spec = body.get("spec") or {}
    replicas = spec.get("replicas", 1)
    scaling = spec.get("autoscaling")
    if isinstance(scaling, dict):
        replicas = (body.get("status") or {}).get("desiredReplicas", scaling.get("minReplicas", 1))
    names = (spec.get("model") or {}).get("names") or [body["metadata"]["name"]]
    valid = isinstance(replicas, int) and not isinstance(replicas, bool)
    return (replicas if valid else 0), [str(n) for n in names]


def _invalid(status: Mapping[str, Any]) -> bool:
    """Whether a pass ended on the InvalidSpec condition (nothing to serve until it is fixed)."""
    return any(
        c.get("type") == "InvalidSpec" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the ModelDeployment (kopf posts it in the background)."""
    kopf.event(dict(body), type=kind, reason=reason, message=message)
