"""The worker's engine flags, end to end on the demo model: which path serves (log line and
metric), ``--engine serial``, and a KV budget too small to batch."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, running

from .conftest import DEMO_NAME, SEED_QUESTION, worker_argv

pytestmark = pytest.mark.slow


@contextmanager
def demo_worker(model_dir: Path, log: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = worker_argv(model_dir, port, "--limit-worker-concurrency", "4", *flags)
    with running(argv, ready_url=f"{url}/health/ready", log_path=log):
        yield url


def ask(url: str, question: str = SEED_QUESTION) -> str:
    body = {
        "model": DEMO_NAME,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def engine_path(url: str) -> str:
    """The engine path the worker's metrics report (the one series set to 1)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("kubechat_worker_engine_info{") and line.endswith(" 1.0"):
            return line.split('path="', 1)[1].split('"', 1)[0]
    raise AssertionError("no kubechat_worker_engine_info series is 1")


def test_the_default_engine_batches(worker) -> None:
    assert engine_path(worker.url) == "batching"


def test_engine_serial_serves_one_at_a_time_and_says_so(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    with demo_worker(demo_model_dir, tmp_path / "worker.log", "--engine", "serial") as url:
        assert engine_path(url) == "serial"
        assert "K2" in ask(url)


def test_a_kv_budget_below_one_sequence_still_serves_every_request(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with demo_worker(demo_model_dir, log, "--kv-cache-memory", "64KiB") as url:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: ask(url), range(4)))
        assert all("K2" in a for a in answers), answers
        assert engine_path(url) == "batching"
    assert "less than one full-length sequence" in log.read_text()
