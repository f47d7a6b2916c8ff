"""kopf wiring: every change, every resume and a periodic timer run the same reconcile pass;
deletion (behind kopf's finalizer) removes the deployment's pods and leases itself."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubechat.spec import GROUP, PLURAL, VERSION

from .controller import Controller

log = logging.getLogger(__name__)


def register(registry: kopf.OperatorRegistry, controller: Controller, interval: float) -> None:
    """Register the handlers of ``controller`` in ``registry``; the timer runs every
    ``interval`` seconds (how soon a stale lease or a dead pod is acted upon)."""

    def run(body: Mapping[str, Any]) -> None:
        try:
            controller.reconcile(body)
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
        removed = controller.cluster.delete_workers(namespace or "default", name)
        controller.forget(uid)
        log.info("deleted %s: removed %d pods and leases", name, removed)


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the ModelDeployment (kopf posts it in the background)."""
    kopf.event(dict(body), type=kind, reason=reason, message=message)
