"""Opening a lease store from its command-line form, for workers, the gateway and the UI.

``local:DIR``   records as files in DIR (local mode, ``kubechat up``)
``kubernetes``  coordination.k8s.io Leases in this pod's namespace (``kubernetes:NAMESPACE``);
                a reader (gateway, UI) may name several, ``kubernetes:NS1,NS2``, or read every
                namespace with ``kubernetes:*`` (a cluster-wide operator's workers)
``none``        no store: a standalone worker announces itself nowhere
"""

from __future__ import annotations

import os
import re
from typing import Any

from .local_store import LocalLeaseStore

STORE_HELP = (
    "where heartbeat leases live: local:DIR, kubernetes[:NAMESPACE[,NAMESPACE...]], "
    "kubernetes:* (every namespace) or none"
)
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def open_store(spec: str, *, reader: bool = False) -> Any:
    """The store named by ``spec``; raises ValueError with the accepted forms otherwise.

    ``reader``: opened by the gateway or UI, which read it per request (local snapshots are then
    reused for a fraction of a second instead of re-reading every file each time).
    """
    kind, _, arg = spec.partition(":")
    if kind == "none":
        return None
    if kind == "local":
        if not arg:
            raise ValueError("local lease store needs a folder: local:DIR")
        return LocalLeaseStore(os.path.expanduser(arg), cache_seconds=0.2 if reader else 0.0)
    if kind == "kubernetes":
        try:
            from .kube_store import ALL_NAMESPACES, KubernetesLeaseStore
        except ImportError as exc:  # pragma: no cover - arrives with the Kubernetes issue
            raise ValueError("the Kubernetes lease store is not available in this build") from exc
        if arg == ALL_NAMESPACES:
            return KubernetesLeaseStore(read_namespaces=[ALL_NAMESPACES])
        namespaces = [n.strip() for n in arg.split(",") if n.strip()]
        bad = [n for n in namespaces if len(n) > 63 or not _NAMESPACE.match(n)]
        if bad or (arg and not namespaces):
            raise ValueError(
                f"not a namespace: {', '.join(bad) or arg!r}; use kubernetes:NAMESPACE, "
                "kubernetes:NS1,NS2 or kubernetes:*"
            )
        if not namespaces:
            return KubernetesLeaseStore()
        return KubernetesLeaseStore(namespace=namespaces[0], read_namespaces=namespaces)
    raise ValueError(f"unknown lease store {spec!r}; use {STORE_HELP.split(': ', 1)[1]}")
