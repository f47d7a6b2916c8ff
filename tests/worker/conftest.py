"""A real worker process on the demo model, shared by the worker API tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI

from tests.support.processes import free_port, kubechat_argv, running

DEMO_NAME = "kubechat-demo"
SEED_QUESTION = "Which mountain is the second highest one in the world?"


@dataclass
class Worker:
    """A running worker: its base URL and an openai client bound to it."""

    url: str
    client: OpenAI
    model: str = DEMO_NAME


def worker_argv(model_dir: Path, port: int, *extra: str) -> list[str]:
    """argv of a demo-model worker on ``port``."""
    return kubechat_argv(
        "worker",
        "--model-path",
        str(model_dir),
        "--model-names",
        DEMO_NAME,
        "--trust-remote-code",
        "--port",
        str(port),
        *extra,
    )


@pytest.fixture(scope="session")
def worker(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the session, limit 4 concurrent sequences."""
    port = free_port()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    argv = worker_argv(demo_model_dir, port, "--limit-worker-concurrency", "4")
    with running(argv, ready_url=f"http://127.0.0.1:{port}/health/ready", log_path=log):
        url = f"http://127.0.0.1:{port}"
        yield Worker(url, OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0))
