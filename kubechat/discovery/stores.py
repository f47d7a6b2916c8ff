"""Opening a lease store from its command-line form, for workers, the gateway and the UI.

``local:DIR``   records as files in DIR (local mode, ``kubechat up``)
``kubernetes``  coordination.k8s.io Leases in this pod's namespace (``kubernetes:NAMESPACE``);
                a reader (gateway, UI) may name several, ``kubernetes:NS1,NS2``, or read every
                namespace with ``kubernetes:*`` (a cluster-wide operator's workers)
``none``        no store: a standalone worker announces itself nowhere
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from kubechat.cli import UsageError
from kubechat.defaults import LEASE_DURATION, LEASE_RENEW_INTERVAL

from .local_store import LocalLeaseStore

STORE_HELP = (
    "where heartbeat leases live: local:DIR, kubernetes[:NAMESPACE[,NAMESPACE...]], "
    "kubernetes:* (every namespace) or none"
)


def add_lease_arguments(parser: argparse.ArgumentParser, advertise_help: str) -> None:
    """The flags of whatever renews a worker's heartbeat lease (``kubechat worker`` and the
    engine agent): store, deployment label, lease name, advertised URL and timing. Their
    defaults come from the pod's environment, as the operator renders it."""
    h = parser.add_argument_group("heartbeat lease (discovery)")
    h.add_argument(
        "--lease-store", default=os.environ.get("KUBECHAT_LEASE_STORE", "none"), help=STORE_HELP
    )
    h.add_argument(
        "--deployment",
        default=os.environ.get("KUBECHAT_DEPLOYMENT", ""),
        help="the ModelDeployment this worker belongs to (lease label)",
    )
    h.add_argument(
        "--worker-name",
        default=os.environ.get("POD_NAME"),
        help="lease name (default: $POD_NAME, else HOST-PORT of the advertised URL)",
    )
    h.add_argument("--advertise-url", default=None, help=advertise_help)
    h.add_argument("--lease-renew-interval", type=float, default=LEASE_RENEW_INTERVAL)
    h.add_argument("--lease-duration", type=float, default=LEASE_DURATION)


def open_lease_writer(args: argparse.Namespace) -> Any:
    """The store named by the flags :func:`add_lease_arguments` declared, after checking their
    timing; :class:`~kubechat.cli.UsageError` for a lease no longer than its renew interval or
    an unknown store."""
    if args.lease_duration <= args.lease_renew_interval:
        raise UsageError("--lease-duration must be longer than --lease-renew-interval")
    try:
        return open_store(args.lease_store)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def add_lease_reader_argument(parser: argparse.ArgumentParser) -> None:
    """``--lease-store`` of whatever reads the workers' leases (the gateway and the UI): the
    Kubernetes Leases unless ``$KUBECHAT_LEASE_STORE`` says otherwise."""
    parser.add_argument(
        "--lease-store",
        default=os.environ.get("KUBECHAT_LEASE_STORE", "kubernetes"),
        help=STORE_HELP,
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
