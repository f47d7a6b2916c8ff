"""``kubechat worker``: serve one model with an OpenAI-compatible API (FastChat's flag names)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from types import FrameType
from typing import Any

import uvicorn

from kubechat.cli import UsageError, configure_logging
from kubechat.defaults import (
    DRAIN_GRACE,
    WORKER_LIMIT_CONCURRENCY,
)
from kubechat.discovery.stores import add_lease_arguments, open_lease_writer
from kubechat.load_failure import LoadFailureReport, termination_message_path, write_report


def configure(p: argparse.ArgumentParser) -> None:
    """Declare the worker's flags."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--model-path",
        required=True,
        help=(
            "a local directory, a .gguf file (or a folder holding one), a hub id, "
            "or kubechat:demo (built on first use)"
        ),
    )
    m.add_argument(
        "--model-names",
        default=None,
        help="comma-separated names served on /v1/models (default: last path part)",
    )
    m.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    m.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the checkpoint's own Python code (needed by Baichuan and others)",
    )
    m.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    m.add_argument(
        "--conv-template",
        default=None,
        help=(
            "prompt template override, a built-in by kubechat's or FastChat's name "
            "(default: tokenizer chat_template, then built-ins)"
        ),
    )
    d = p.add_argument_group("devices")
    d.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: cuda when --num-gpus > 0, else cpu",
    )
    d.add_argument("--num-gpus", type=int, default=None, help="GPUs to place the weights on")
    d.add_argument(
        "--gpus", default=None, help="which GPUs to use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES)"
    )
    d.add_argument(
        "--max-gpu-memory",
        default=None,
        help="memory cap per GPU, e.g. 20GiB (applies with one GPU too)",
    )
    d.add_argument(
        "--cpu-offloading",
        action="store_true",
        help="put what does not fit under the GPU caps on the CPU",
    )
    s = p.add_argument_group("serving")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=int(os.environ.get("KUBECHAT_PORT", "21002")))
    s.add_argument(
        "--limit-worker-concurrency",
        type=int,
        default=WORKER_LIMIT_CONCURRENCY,
        help="sequences admitted at once; more get 429 with Retry-After",
    )
    s.add_argument("--stream-interval", type=int, default=1, help="tokens per streamed chunk")
    s.add_argument(
        "--engine",
        choices=["auto", "batching", "serial"],
        default="auto",
        help="auto/batching: continuous batching where the checkpoint allows it, else serial",
    )
    s.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help=(
            "prompt tokens prefilled per batched step (long prompts are chunked; default: 128 "
            "on CPU, 2048 on GPUs)"
        ),
    )
    s.add_argument(
        "--kv-cache-memory",
        default=None,
        help=(
            "memory for the batch's KV cache, e.g. 2GiB (default on GPUs: what --max-gpu-memory "
            "leaves after the weights; on CPU: bounded by --limit-worker-concurrency only)"
        ),
    )
    s.add_argument(
        "--drain-grace",
        type=float,
        default=float(DRAIN_GRACE),
        help="seconds admitted requests may finish after SIGTERM before exit",
    )
    s.add_argument("--log-level", default="info")
    add_lease_arguments(p, "base URL the gateway uses (default: http://$POD_IP or HOST, and PORT)")


def run(args: argparse.Namespace) -> int:
    """Parse flags into options, then serve until stopped."""
    from .templates import canonical_template_name

    if args.conv_template:
        try:
            canonical_template_name(args.conv_template)
        except ValueError as exc:  # at startup, not after the model has loaded
            raise UsageError(f"--conv-template: {exc}") from exc

    from .api import create_app
    from .loading import LoadOptions
    from .runtime import RuntimeOptions, build_runtime, default_model_names
    from .state import Identity, WorkerState

    if args.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    num_gpus = args.num_gpus
    if num_gpus is None:
        num_gpus = len(args.gpus.split(",")) if args.gpus else 0
    if num_gpus < 0:
        raise UsageError("--num-gpus must be >= 0")
    if args.limit_worker_concurrency < 1:
        raise UsageError("--limit-worker-concurrency must be >= 1")
    if args.stream_interval < 1:
        raise UsageError("--stream-interval must be >= 1")
    device = args.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 else "cpu"
    if device == "cpu" and num_gpus > 0:
        raise UsageError("--device cpu contradicts --num-gpus > 0")
    if args.max_batch_tokens is not None and args.max_batch_tokens < 16:
        raise UsageError("--max-batch-tokens must be >= 16")
    kv_cache_bytes = None
    if args.kv_cache_memory:
        from .placement import parse_memory

        try:
            kv_cache_bytes = parse_memory(args.kv_cache_memory)
        except ValueError as exc:
            raise UsageError(f"--kv-cache-memory: {exc}") from exc
    store = open_lease_writer(args)
    names = [n.strip() for n in (args.model_names or "").split(",") if n.strip()]
    options = RuntimeOptions(
        load=LoadOptions(
            model_path=args.model_path,
            revision=args.revision,
            device=device,
            num_gpus=num_gpus,
            max_gpu_memory=args.max_gpu_memory,
            dtype=args.dtype,
            cpu_offloading=args.cpu_offloading,
            trust_remote_code=args.trust_remote_code,
        ),
        model_names=names or default_model_names(args.model_path),
        conv_template=args.conv_template,
        limit_concurrency=args.limit_worker_concurrency,
        engine=args.engine,
        max_batch_tokens=args.max_batch_tokens,
        kv_cache_bytes=kv_cache_bytes,
    )
    configure_logging(args.log_level)
    failure: list[LoadFailureReport] = []
    server: DrainingServer | None = None

    def fatal(report: LoadFailureReport) -> None:
        failure.append(report)
        if server is not None:
            server.should_exit = True

    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    host_for_url = os.environ.get("POD_IP") or local
    identity = Identity(
        name=args.worker_name or f"{_safe(host_for_url)}-{args.port}",
        deployment=args.deployment or options.model_names[0],
        address=args.advertise_url or f"http://{host_for_url}:{args.port}",
    )
    state = WorkerState(
        options.model_names,
        lambda: build_runtime(options),
        limit_concurrency=args.limit_worker_concurrency,
        stream_interval=args.stream_interval,
        on_fatal=fatal,
        identity=identity,
        lease_writer=store,
        renew_interval=args.lease_renew_interval,
        lease_duration=args.lease_duration,
    )
    app = create_app(state)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, state, args.drain_grace)
    server.run()
    if failure:
        # the log's last line for people (and FallbackToLogsOnError); the file for the operator
        message = f"kubechat worker: model load failed ({failure[0].reason}): {failure[0].message}"
        print(message, file=sys.stderr, flush=True)
        write_report(failure[0], termination_message_path())
        return 1
    return 0


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "worker"


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains before exiting.

    Draining marks the lease (the gateway stops routing here), answers newcomers with 503 (the
    gateway retries them elsewhere) and lets admitted requests finish within the grace period.
    A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, state: Any, grace: float) -> None:
        super().__init__(config)
        self._state = state
        self._grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: Any = None) -> None:
        """Serve, remembering the loop so signal handlers can schedule the drain on it."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain, then exit; later signals (or before loading ends): exit now."""
        if self._draining or self._loop is None or self._state.runtime is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        await self._state.drain(self._grace)
        self.should_exit = True
