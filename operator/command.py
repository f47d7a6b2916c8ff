"""``kubechat operator``: the kopf operator that turns ModelDeployments into worker pods."""

from __future__ import annotations

import argparse
import os
import sys

from kubechat.cli import UsageError, configure_logging
from kubechat.defaults import DRAIN_GRACE, LEASE_DURATION, LEASE_RENEW_INTERVAL
from kubechat.vllm_plan import DEFAULT_VLLM_IMAGE


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
        "--vllm-image",
        default=os.environ.get("KUBECHAT_VLLM_IMAGE", DEFAULT_VLLM_IMAGE),
        help="vLLM's image in pods of deployments with engine: vllm, unless spec.vllm.image "
        "names one (also $KUBECHAT_VLLM_IMAGE)",
    )
    parser.add_argument(
        "--worker-image-pull-secret",
        action="append",
        default=[],
        metavar="SECRET",
        help="imagePullSecret of worker pods, in the workers' namespace (repeatable)",
    )
    parser.add_argument(
        "--worker-service-account",
        default=os.environ.get("KUBECHAT_WORKER_SERVICE_ACCOUNT", "kubechat-worker"),
        help="service account of worker pods (it must be allowed to write Leases)",
    )
    parser.add_argument("--reconcile-interval", type=float, default=3.0, help="seconds")
    parser.add_argument(
        "--drain-grace", type=int, default=DRAIN_GRACE, help="workers' drain, seconds"
    )
    parser.add_argument("--lease-renew-interval", type=float, default=LEASE_RENEW_INTERVAL)
    parser.add_argument("--lease-duration", type=float, default=LEASE_DURATION)
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
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="address of the Prometheus /metrics endpoint (default: all interfaces)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="port of /metrics (kubechat_operator_*: reconciles, errors, durations); 0: off",
    )
    parser.add_argument(
        "--health-host",
        default="0.0.0.0",
        help="address of the /healthz liveness endpoint (default: all interfaces)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="port of /healthz (kopf's liveness endpoint, for the pod's probes); 0: off",
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
    from .metrics import OperatorMetrics
    from .pods import PodSettings

    if args.reconcile_interval <= 0:
        raise UsageError("--reconcile-interval must be > 0")
    if args.lease_duration <= args.lease_renew_interval:
        raise UsageError("--lease-duration must be longer than --lease-renew-interval")
    for flag, port in (("--metrics-port", args.metrics_port), ("--health-port", args.health_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be between 0 (off) and 65535 (got {port})")
    if args.metrics_port and args.metrics_port == args.health_port:
        raise UsageError("--metrics-port and --health-port must differ")
    configure_logging(args.log_level)
    settings = ControllerSettings(
        pods=PodSettings(
            image=args.worker_image,
            vllm_image=args.vllm_image,
            image_pull_secrets=tuple(args.worker_image_pull_secret),
            service_account=args.worker_service_account,
            drain_grace=args.drain_grace,
            lease_renew_interval=args.lease_renew_interval,
            lease_duration=args.lease_duration,
        ),
        lease_grace=args.lease_grace,
        heartbeat_timeout=args.heartbeat_timeout,
    )
    metrics = OperatorMetrics()
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_host, args.metrics_port)
        except OSError as exc:  # the port is taken: not a usage error, a failed start
            where = f"{args.metrics_host}:{args.metrics_port}"
            print(
                f"kubechat operator: error: cannot serve metrics on {where}: {exc}", file=sys.stderr
            )
            return 1
    controller = Controller(Cluster(), settings, post_event)
    registry = kopf.OperatorRegistry()
    register(registry, controller, args.reconcile_interval, metrics)
    operator_settings = kopf.OperatorSettings()
    operator_settings.watching.server_timeout = 60
    operator_settings.posting.level = logging.WARNING
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=operator_settings,
            # kopf wants a collection of namespaces, or clusterwide=True with none (an empty
            # tuple: None breaks its namespace observer)
            namespaces=tuple(args.namespace),
            clusterwide=not args.namespace,
            standalone=True,
            liveness_endpoint=(
                f"http://{_url_host(args.health_host)}:{args.health_port}/healthz"
                if args.health_port
                else None
            ),
        )
    )
    return 0


def _url_host(host: str) -> str:
    """``host`` as it goes into a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
