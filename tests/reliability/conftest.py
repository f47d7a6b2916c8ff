"""Servers shared by the reliability tests: one real demo worker and a gateway with an API key.

Both are real processes (the same commands a user runs), started once per session; the fault
scenarios start their own stacks because they kill workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port, kubechat_argv, running

MODEL = "kubechat-demo"
API_KEY = "sk-reliability-0123456789abcdef"
GATEWAY_BODY_LIMIT = 64 * 1024
WORKER_LIMIT = 4


@dataclass
class Served:
    """A running kubechat process: its base URL and log file."""

    url: str
    log: Path
    pid: int


@pytest.fixture(scope="session")
def lease_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local lease store shared by the session's worker and gateway."""
    return tmp_path_factory.mktemp("leases")


@pytest.fixture(scope="session")
def real_worker(
    demo_model_dir: Path, lease_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A demo-model worker (limit 4 sequences) publishing its lease into ``lease_dir``."""
    port = free_port()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    argv = kubechat_argv(
        "worker",
        "--model-path",
        str(demo_model_dir),
        "--model-names",
        MODEL,
        "--trust-remote-code",
        "--port",
        str(port),
        "--limit-worker-concurrency",
        str(WORKER_LIMIT),
        "--lease-store",
        f"local:{lease_dir}",
        "--worker-name",
        "rel-0",
        "--lease-renew-interval",
        "0.5",
        "--lease-duration",
        "2",
    )
    url = f"http://127.0.0.1:{port}"
    with running(argv, ready_url=f"{url}/health/ready", log_path=log) as proc:
        yield Served(url, log, proc.pid)


@pytest.fixture(scope="session")
def keyed_gateway(
    real_worker: Served, lease_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A gateway in front of ``real_worker`` with an API key, a 64 KiB body limit and debug
    logging (so a test can check that not even debug output carries the key)."""
    port = free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    argv = kubechat_argv(
        "gateway",
        "--port",
        str(port),
        "--lease-store",
        f"local:{lease_dir}",
        "--api-key",
        API_KEY,
        "--max-body-bytes",
        str(GATEWAY_BODY_LIMIT),
        "--log-level",
        "debug",
    )
    url = f"http://127.0.0.1:{port}"
    with running(argv, ready_url=f"{url}/health", log_path=log) as proc:
        yield Served(url, log, proc.pid)


AUTH = {"Authorization": f"Bearer {API_KEY}"}
