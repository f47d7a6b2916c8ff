"""``kubechat ui``: the Gradio chat page over the live workers (FastChat's gradio web server)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kubechat.cli import UsageError
from kubechat.cold_start import HOLD_TIMEOUT
from kubechat.discovery.stores import add_lease_reader_argument, open_store


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    add_lease_reader_argument(parser)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--model-list-mode",
        choices=["once", "reload"],
        default="reload",
        help="once: the model list is read at start; reload: on every page load",
    )
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require a login (repeatable; also $KUBECHAT_UI_AUTH, comma-separated)",
    )
    parser.add_argument("--auth-file", type=Path, help="file with one USER:PASSWORD per line")
    parser.add_argument(
        "--hold-timeout",
        type=float,
        default=HOLD_TIMEOUT,
        help="seconds a question for an autoscaled model with no worker running waits for one "
        "to start (the page says the model is starting); 0: the no-worker error at once",
    )
    parser.add_argument(
        "--max-history-turns",
        type=int,
        default=8,
        help="past exchanges sent with each question (older ones are dropped)",
    )


def parse_credentials(entries: list[str], auth_file: Path | None) -> list[tuple[str, str]]:
    """``user:password`` entries (flags, $KUBECHAT_UI_AUTH, file) as pairs; UsageError if bad."""
    raw = list(entries)
    raw += [e for e in os.environ.get("KUBECHAT_UI_AUTH", "").split(",") if e.strip()]
    if auth_file is not None:
        try:
            raw += [line for line in auth_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise UsageError(f"cannot read --auth-file {auth_file}: {exc.strerror}") from exc
    pairs = []
    for entry in raw:
        user, sep, password = entry.strip().partition(":")
        if not sep or not user or not password:
            raise UsageError("--auth takes USER:PASSWORD with both parts non-empty")
        pairs.append((user, password))
    return pairs


def run(args: argparse.Namespace) -> int:
    """Serve the page until stopped."""
    import asyncio

    from starlette.middleware import Middleware

    from kubechat.cold_start import ColdStarts
    from kubechat.discovery.demand import open_demand
    from kubechat.discovery.live import LiveView

    from .backend import ChatBackend
    from .model_choices import RefreshModelChoices
    from .page import CSS, build_page

    if args.max_history_turns < 0:
        raise UsageError("--max-history-turns must be >= 0")
    if args.hold_timeout < 0:
        raise UsageError("--hold-timeout must be >= 0")
    credentials = parse_credentials(args.auth, args.auth_file)
    try:
        store = open_store(args.lease_store, reader=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if store is None:
        raise UsageError("the UI needs a lease store to find workers (local:DIR or kubernetes)")
    view = LiveView(store)
    asyncio.run(view.start())
    demand = open_demand(store)
    if hasattr(demand, "start"):  # Kubernetes: lists ModelDeployments in the background
        asyncio.run(demand.start())
    backend = ChatBackend(view, cold_starts=ColdStarts(view, demand, args.hold_timeout))
    page, model_choices = build_page(
        backend,
        reload_models=args.model_list_mode == "reload",
        max_history_turns=args.max_history_turns,
    )
    page.queue(default_concurrency_limit=64)
    middleware = []
    if model_choices is not None:  # API clients see the live models as the picker's choices
        middleware.append(Middleware(RefreshModelChoices, choices=model_choices))
    page.launch(
        server_name=args.host,
        server_port=args.port,
        auth=credentials or None,
        show_error=True,
        css=CSS,
        app_kwargs={"middleware": middleware},
    )
    return 0
