"""``kubechat worker``: serve one model with an OpenAI-compatible API (FastChat's flag names)."""

from __future__ import annotations

import argparse
import logging
import os
import signal

from kubechat.cli import UsageError


def configure(p: argparse.ArgumentParser) -> None:
    """Declare the worker's flags."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--model-path",
        required=True,
        help="a local directory, a hub id, or kubechat:demo (built on first use)",
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
        help="prompt template override (default: tokenizer chat_template, then built-ins)",
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
        default=5,
        help="sequences admitted at once; more get 429 with Retry-After",
    )
    s.add_argument("--stream-interval", type=int, default=1, help="tokens per streamed chunk")
    s.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    """Parse flags into options, then serve until stopped."""
    import uvicorn

    from .api import create_app
    from .loading import LoadOptions
    from .runtime import RuntimeOptions, build_runtime, default_model_names
    from .state import WorkerState

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
    )
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    failure: list[str] = []

    def fatal(message: str) -> None:
        failure.append(message)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own graceful shutdown

    state = WorkerState(
        options.model_names,
        lambda: build_runtime(options),
        limit_concurrency=args.limit_worker_concurrency,
        stream_interval=args.stream_interval,
        on_fatal=fatal,
    )
    app = create_app(state)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=30,
    )
    if failure:
        print(f"kubechat worker: model load failed: {failure[0]}", flush=True)
        return 1
    return 0
