"""``kubechat operator``: the kopf operator that turns ModelDeployments into worker pods."""

from __future__ import annotations

import argparse
import os

from kubechat.cli import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--worker-image",
        default=os.environ.get("KUBECHAT_WORKER_IMAGE", "ghcr.io/kubechat/kubechat:0.1.0"),
        help="container image of worker pods (also $KUBECHAT_WORKER_IMAGE)",
    )
    parser.add_argument(
        "--worker-service-account",
        default=os.environ.get("KUBECHAT_WORKER_SERVICE_ACCOUNT", "kubechat-worker"),
        help="service account of worker pods (it must be allowed to write Leases)",
    )
    parser.add_argument("--reconcile-interval", type=float, default=3.0, help="seconds")
    parser.add_argument("--drain-grace", type=int, default=30, help="workers' drain, seconds")
    parser.add_argument("--lease-renew-interval", type=float, default=2.0)
    parser.add_argument("--lease-duration", type=float, default=6.0)
    parser.add_argument(
        "--lease-grace",
        type=float,
        default=120.0,
        help="seconds a Ready pod may run without any lease before it is replaced",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=30.0,
        help="seconds a Ready pod may go without renewing its lease before it is replaced "
        "(HeartbeatLost; at least the lease duration; routing stops at lease expiry already)",
    )
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    """Run the operator until SIGTERM/SIGINT."""
    import asyncio
    import logging

    import kopf

    from .controller import Controller, ControllerSettings
    from .handlers import post_event, register
    from .kube import Cluster
    from .pods import PodSettings

    if args.reconcile_interval <= 0:
        raise UsageError("--reconcile-interval must be > 0")
    if args.lease_duration <= args.lease_renew_interval:
        raise UsageError("--lease-duration must be longer than --lease-renew-interval")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ControllerSettings(
        pods=PodSettings(
            image=args.worker_image,
            service_account=args.worker_service_account,
            drain_grace=args.drain_grace,
            lease_renew_interval=args.lease_renew_interval,
            lease_duration=args.lease_duration,
        ),
        lease_grace=args.lease_grace,
        heartbeat_timeout=args.heartbeat_timeout,
    )
    controller = Controller(Cluster(), settings, post_event)
    registry = kopf.OperatorRegistry()
    register(registry, controller, args.reconcile_interval)
    operator_settings = kopf.OperatorSettings()
    operator_settings.watching.server_timeout = 60
    operator_settings.posting.level = logging.WARNING
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=operator_settings,
            namespaces=args.namespace or None,
            clusterwide=not args.namespace,
            standalone=True,
        )
    )
    return 0
