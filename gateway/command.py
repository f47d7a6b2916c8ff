"""``kubechat gateway``: one OpenAI-compatible endpoint over the live workers."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from kubechat.cli import UsageError, configure_logging
from kubechat.cold_start import HOLD_TIMEOUT
from kubechat.discovery.stores import add_lease_reader_argument, open_store


def configure(p: argparse.ArgumentParser) -> None:
    """Declare the gateway's flags."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("KUBECHAT_PORT", "8000")))
    add_lease_reader_argument(p)
    a = p.add_argument_group("authentication")
    a.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="an accepted API key (repeatable; also $KUBECHAT_API_KEYS, comma-separated)",
    )
    a.add_argument(
        "--api-key-file",
        default=os.environ.get("KUBECHAT_API_KEY_FILE"),
        help="file with one API key per line",
    )
    a.add_argument(
        "--protect-metrics", action="store_true", help="require an API key on /metrics too"
    )
    a.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="a browser origin allowed to call the API, e.g. https://chat.example.com "
        "(repeatable; '*' for any; default: none, no CORS headers are sent)",
    )
    u = p.add_argument_group("upstream")
    u.add_argument(
        "--retry-attempts", type=int, default=3, help="workers tried per request before giving up"
    )
    u.add_argument(
        "--retry-deadline",
        type=float,
        default=30.0,
        help="seconds after which no further worker is tried",
    )
    u.add_argument("--connect-timeout", type=float, default=5.0)
    u.add_argument(
        "--first-chunk-timeout",
        type=float,
        default=30.0,
        help="a stream whose worker sends nothing for this long is retried elsewhere",
    )
    u.add_argument(
        "--upstream-timeout",
        type=float,
        default=600.0,
        help="longest silence from a worker in the middle of a response",
    )
    u.add_argument(
        "--hold-timeout",
        type=float,
        default=HOLD_TIMEOUT,
        help="seconds a request for an autoscaled model with no live worker waits for one to "
        "start (scale from zero) before it gets 503; 0: answer 503 at once",
    )
    u.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    u.add_argument(
        "--max-header-bytes",
        type=int,
        default=32 * 1024,
        help="larger request headers (all together) get 431",
    )
    p.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="connections waiting to be accepted (the kernel caps it at net.core.somaxconn)",
    )
    p.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    """Start discovery and serve until stopped."""
    import uvicorn

    from kubechat.discovery.demand import open_demand
    from kubechat.discovery.live import LiveView
    from kubechat.routing import Router
    from kubechat.upstream import RetryPolicy

    from .app import GatewayConfig, create_app
    from .auth import load_keys

    if args.retry_attempts < 1:
        raise UsageError("--retry-attempts must be >= 1")
    if args.hold_timeout < 0:
        raise UsageError("--hold-timeout must be >= 0")
    try:
        store = open_store(args.lease_store, reader=True)
        keys = load_keys(args.api_key, args.api_key_file)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    if store is None:
        raise UsageError(
            "the gateway needs a lease store to find workers (local:DIR or kubernetes)"
        )
    configure_logging(args.log_level)
    view = LiveView(store)
    router = Router(view)
    config = GatewayConfig(
        api_keys=keys,
        protect_metrics=args.protect_metrics,
        max_body_bytes=args.max_body_bytes,
        max_header_bytes=args.max_header_bytes,
        cors_origins=[o.strip() for o in args.cors_origin if o.strip()],
        connect_timeout=args.connect_timeout,
        upstream_timeout=args.upstream_timeout,
        hold_timeout=args.hold_timeout,
        retry=RetryPolicy(
            attempts=args.retry_attempts,
            deadline=args.retry_deadline,
            first_chunk_timeout=args.first_chunk_timeout,
        ),
    )

    demand = open_demand(store)

    @contextlib.asynccontextmanager
    async def discovery() -> AsyncIterator[None]:
        await view.start()
        if hasattr(demand, "start"):
            await demand.start()
        try:
            yield
        finally:
            if hasattr(demand, "stop"):
                await demand.stop()
            await view.stop()

    logging.getLogger(__name__).info(
        "gateway on http://%s:%d, workers from %s, %s",
        args.host,
        args.port,
        args.lease_store,
        f"{len(keys)} API key(s)" if keys else "no API key (open)",
    )
    app = create_app(view, router, config, lifespan_hooks=[discovery], demand=demand)
    raise_open_files_limit()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=10,
        backlog=args.backlog,
    )
    return 0


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit and return it.

    Every proxied stream holds two sockets (client and worker), so the common default soft
    limit of 1,024 would refuse connections at about 500 concurrent streams.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logging.getLogger(__name__).warning("could not raise the open files limit: %s", exc)
    return soft
