"""vLLM for the benchmarks: its raw OpenAI server, and kubechat's ``engine: vllm`` worker (the
agent with vLLM as its child, as ``kubechat up`` runs it), both from vLLM's own environment
(kubechat/vllm_env.py; ``bash .ci/install-vllm.sh`` builds it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from processes import Served, free_port, kubechat_argv, running

from kubechat.plan import WorkerLaunch, plan_deployment, worker_command_args
from kubechat.spec import parse_model_deployment

# vLLM's CPU backend takes this many GiB for its KV cache unless the environment says otherwise.
KV_CACHE_GIB = "2"


def _env() -> dict[str, str]:
    return {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB),
        # run from the clone, `python -m` would import its operator/ as the standard library's
        "PYTHONSAFEPATH": "1",
    }


def _plan(model_dir: Path, name: str, limit: int):
    """The one worker of a ``engine: vllm`` deployment on ``model_dir``."""
    md = parse_model_deployment(
        {
            "apiVersion": "kubechat.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "engine": "vllm",
                "model": {"path": str(model_dir), "dtype": "float32"},
                "worker": {"limitConcurrency": limit},
                "vllm": {"maxModelLen": 2048},
            },
        }
    )
    (worker,) = plan_deployment(md).workers
    return worker


@contextlib.contextmanager
def vllm_serve(
    model_dir: Path, name: str, workdir: Path, python: Path, limit: int
) -> Iterator[Served]:
    """vLLM's own server, with the flags kubechat's plan gives it, and nothing in front."""
    port = free_port()
    argv = _plan(model_dir, name, limit).vllm.argv(str(python), "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"vllm-{port}.log"
    with running(
        argv, ready_url=f"{url}/health", log_path=log, timeout=900, env=_env(), grace=60
    ) as proc:
        yield Served(url, proc.pid)


@contextlib.contextmanager
def kubechat_vllm(
    model_dir: Path, name: str, workdir: Path, python: Path, limit: int, leases: Path
) -> Iterator[Served]:
    """``kubechat agent`` with vLLM as its child, renewing its lease in ``leases``; the URL is
    vLLM's (the address its lease gives the gateway)."""
    worker = _plan(model_dir, name, limit)
    agent_port, engine_port = free_port(), free_port()
    launch = WorkerLaunch("127.0.0.1", agent_port, f"local:{leases}", name=f"vllm-{engine_port}")
    engine_url = f"http://127.0.0.1:{engine_port}"
    argv = kubechat_argv(
        "agent",
        *worker_command_args(worker, launch),
        "--engine-url",
        engine_url,
        "--",
        *worker.vllm.argv(str(python), "127.0.0.1", engine_port),
    )
    log = workdir / f"agent-{agent_port}.log"
    ready = f"http://127.0.0.1:{agent_port}/health/ready"
    with running(argv, ready_url=ready, log_path=log, timeout=900, env=_env(), grace=90) as proc:
        yield Served(engine_url, proc.pid)
