"""``kubechat agent``: the lease beside an engine server that is not kubechat's own (vLLM).

In a pod the engine is the container beside this one; locally (``kubechat up``) the agent starts
it from the command after ``--`` and stops it once drained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from urllib.parse import urlsplit

from kubechat.cli import UsageError, configure_logging
from kubechat.discovery.stores import add_lease_arguments, open_lease_writer
from kubechat.engine_metrics import PROTOCOL_METRICS

ENGINES = sorted(name for name in PROTOCOL_METRICS if name != "transformers")


def configure(p: argparse.ArgumentParser) -> None:
    """Declare the agent's flags."""
    e = p.add_argument_group("engine")
    e.add_argument("--engine", choices=ENGINES, default="vllm", help="which server it is")
    e.add_argument(
        "--engine-url",
        default="http://127.0.0.1:8000",
        help="where the agent reads the engine's /health and /metrics",
    )
    e.add_argument(
        "--model-names",
        default=None,
        help="comma-separated names the engine serves (default: its /v1/models)",
    )
    e.add_argument(
        "--capacity",
        type=int,
        default=256,
        help="sequences the engine runs at once (vLLM's --max-num-seqs), for the lease",
    )
    e.add_argument("--poll-interval", type=float, default=1.0, help="seconds between readings")
    e.add_argument(
        "--drain-grace",
        type=float,
        default=30.0,
        help="seconds the engine may finish its requests in after SIGTERM",
    )
    e.add_argument(
        "--drain-settle",
        type=float,
        default=2.0,
        help="seconds between marking the lease draining and counting on no new request",
    )
    e.add_argument(
        "--engine-stop-timeout",
        type=float,
        default=30.0,
        help="local mode: seconds the engine gets to exit after SIGTERM before SIGKILL",
    )
    e.add_argument("--log-level", default="info")
    s = p.add_argument_group("the agent's own /health and /health/ready (probes)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="(default: no health endpoints)")
    add_lease_arguments(
        p,
        "base URL the gateway sends requests to (default: http://$POD_IP or the engine's "
        "host, and the engine's port)",
    )
    p.add_argument(
        "engine_command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="local mode: the engine server to start and stop (e.g. -- python -m vllm...)",
    )


def run(args: argparse.Namespace) -> int:
    """Check the flags, then run the agent until it has drained or the engine exits."""
    from .agent import Agent
    from .engine_probe import EngineProbe
    from .engine_process import EngineProcess

    engine_url = urlsplit(args.engine_url)
    if engine_url.scheme not in ("http", "https") or not engine_url.hostname:
        raise UsageError(f"--engine-url: not an http(s) URL: {args.engine_url!r}")
    for flag in ("capacity", "poll_interval", "lease_renew_interval"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be > 0")
    for flag in ("drain_grace", "drain_settle", "engine_stop_timeout"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0")
    store = open_lease_writer(args)
    command = list(args.engine_command)
    if command[:1] == ["--"]:
        command = command[1:]
    port = engine_url.port or (443 if engine_url.scheme == "https" else 80)
    host = os.environ.get("POD_IP") or engine_url.hostname
    address = (args.advertise_url or f"{engine_url.scheme}://{host}:{port}").rstrip("/")
    names = [n.strip() for n in (args.model_names or "").split(",") if n.strip()]
    configure_logging(args.log_level)
    agent = Agent(
        EngineProbe(args.engine_url, PROTOCOL_METRICS[args.engine]),
        name=args.worker_name or _lease_name(address),
        deployment=args.deployment or (names[0] if names else "default"),
        address=address,
        capacity=args.capacity,
        model_names=names,
        writer=store,
        renew_interval=args.lease_renew_interval,
        lease_duration=args.lease_duration,
        poll_interval=args.poll_interval,
        drain_grace=args.drain_grace,
        drain_settle=args.drain_settle,
        # not from the caller's folder: a clone's top-level operator/ would shadow the
        # standard library's for `python -m`
        engine=EngineProcess(command, cwd="/") if command else None,
        engine_stop_timeout=args.engine_stop_timeout,
        health_address=(args.host, args.port) if args.port is not None else None,
    )
    return asyncio.run(agent.run())


def _lease_name(address: str) -> str:
    """``http://10.0.0.7:8000`` -> ``10-0-0-7-8000``: a name the Lease API accepts."""
    netloc = urlsplit(address).netloc
    return "".join(c if c.isalnum() else "-" for c in netloc).strip("-").lower() or "agent"
