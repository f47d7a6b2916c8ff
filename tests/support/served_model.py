"""One real worker on a given checkpoint behind a real gateway (local lease store), as processes:
what a user runs, reached with the openai SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

from tests.support.processes import free_port, kubechat_argv, running, until


@dataclass
class ServedModel:
    """A worker and the gateway in front of it."""

    model: str
    worker_url: str
    gateway_url: str

    def client(self, via_gateway: bool = True) -> OpenAI:
        """An openai client of the gateway (or of the worker itself)."""
        base = self.gateway_url if via_gateway else self.worker_url
        return OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


@contextlib.contextmanager
def served_model(
    model_dir: Path, name: str, base: Path, *worker_args: str
) -> Iterator[ServedModel]:
    """Run ``kubechat worker`` on ``model_dir`` as model ``name`` and ``kubechat gateway`` in
    front of it, sharing a lease folder under ``base``; ends both when the block ends."""
    store = f"local:{base / 'leases'}"
    worker_port, gateway_port = free_port(), free_port()
    worker = kubechat_argv(
        "worker",
        "--model-path",
        str(model_dir),
        "--model-names",
        name,
        "--port",
        str(worker_port),
        "--lease-store",
        store,
        *worker_args,
    )
    gateway = kubechat_argv("gateway", "--lease-store", store, "--port", str(gateway_port))
    worker_url = f"http://127.0.0.1:{worker_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with (
        running(worker, ready_url=f"{worker_url}/health/ready", log_path=base / "worker.log"),
        running(gateway, ready_url=f"{gateway_url}/health", log_path=base / "gateway.log"),
    ):
        until(
            lambda: name in httpx.get(f"{gateway_url}/health").json()["models"],
            timeout=30,
            what=f"the gateway sees {name}",
        )
        yield ServedModel(name, worker_url, gateway_url)
