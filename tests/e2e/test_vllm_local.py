"""``kubechat up`` with ``engine: vllm``: real vLLM (its own environment, .ci/install-vllm.sh)
on the benchmark model, behind the gateway, answering the openai SDK; the lease carries vLLM's
load; SIGTERM drains with nothing lost and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai import AsyncOpenAI, OpenAI

from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.vllm_env import VENV_VARIABLE
from tests.support.processes import free_port, kubechat_argv, tail, until
from tests.support.vllm import (
    VLLM_START_TIMEOUT,
    VLLM_TEST_ENV,
    bench_model_dir,
    greedy_tokens,
    streamed_greedy,
    vllm_python,
)

__all__ = ["bench_model_dir", "vllm_python"]  # fixtures

pytestmark = pytest.mark.slow

MODEL = "bench"
LIMIT = 4  # spec.worker.limitConcurrency: vLLM's --max-num-seqs
GREEDY = {"temperature": 0.0}  # the benchmark model's greedy output never ends early


@dataclass
class VllmStack:
    """A running ``kubechat up`` of one vLLM worker."""

    url: str
    proc: subprocess.Popen
    log: Path
    leases: LocalLeaseStore

    def lease(self):
        """The worker's lease (None when there is none)."""
        return next(iter(self.leases.snapshot()), None)


def manifest(model_dir: Path) -> dict:
    """The deployment a user writes for vLLM on the benchmark model."""
    return {
        "apiVersion": "kubechat.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {
            "engine": "vllm",
            "model": {"path": str(model_dir), "dtype": "float32"},
            "worker": {"limitConcurrency": LIMIT},
            # eager: vLLM starts without compiling the model (this test measures no speed)
            "vllm": {"maxModelLen": 2048, "extraArgs": ["--enforce-eager"]},
        },
    }


@pytest.fixture(scope="module")
def vllm_stack(
    vllm_python: Path, bench_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmStack]:
    base = tmp_path_factory.mktemp("vllm-up")
    spec = base / "bench-vllm.yaml"
    spec.write_text(yaml.safe_dump(manifest(bench_model_dir)))
    port, state, log = free_port(), base / "state", base / "up.log"
    env = {
        **os.environ,
        **VLLM_TEST_ENV,
        VENV_VARIABLE: str(vllm_python.parent.parent),
        "PYTHONUNBUFFERED": "1",
    }
    argv = kubechat_argv("up", str(spec), "--port", str(port), "--state-dir", str(state), "--no-ui")
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    stack = VllmStack(f"http://127.0.0.1:{port}", proc, log, LocalLeaseStore(state / "leases"))
    try:
        deadline = time.monotonic() + VLLM_START_TIMEOUT
        while "ready." not in log.read_text():
            assert proc.poll() is None, f"kubechat up exited {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"not ready:\n{tail(log)}"
            time.sleep(0.5)
        yield stack
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_gateway_answers_from_vllm(vllm_stack: VllmStack) -> None:
    client = OpenAI(base_url=f"{vllm_stack.url}/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "def f(x):"}], max_tokens=16, **GREEDY
    )
    assert reply.usage.completion_tokens == 16
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content
    lease = vllm_stack.lease()
    assert lease.address != vllm_stack.url  # the gateway relayed to vLLM itself
    assert httpx.get(f"{lease.address}/v1/models").json()["data"][0]["owned_by"] == "vllm"


async def test_lease_shows_vllm_load(vllm_stack: VllmStack) -> None:
    client = AsyncOpenAI(base_url=f"{vllm_stack.url}/v1", api_key="none", max_retries=0)

    asks = [
        asyncio.create_task(greedy_tokens(client, MODEL, "import sys", 500))
        for _ in range(LIMIT + 2)
    ]
    seen = set()
    while not all(a.done() for a in asks):
        lease = vllm_stack.lease()
        seen.add((lease.in_flight, lease.queued))
        if (LIMIT + 2, 2) in seen:
            break
        await asyncio.sleep(0.1)
    assert (LIMIT + 2, 2) in seen, seen  # four running (vLLM's --max-num-seqs), two waiting
    assert await asyncio.gather(*asks) == [500] * (LIMIT + 2)


async def test_sigterm_drains_with_nothing_lost(vllm_stack: VllmStack) -> None:
    """Last: it stops the stack. Streams in flight at SIGTERM complete; nothing stays."""
    client = AsyncOpenAI(base_url=f"{vllm_stack.url}/v1", api_key="none", max_retries=0)

    engine = vllm_stack.lease().address
    streams = [
        asyncio.create_task(streamed_greedy(client, MODEL, "class B:", 300)) for _ in range(LIMIT)
    ]
    await asyncio.to_thread(
        until, lambda: vllm_stack.lease().in_flight == LIMIT, 30, 0.05, "streams in vLLM"
    )
    vllm_stack.proc.send_signal(signal.SIGTERM)
    assert await asyncio.gather(*streams) == [(300, "length")] * LIMIT
    assert await asyncio.to_thread(vllm_stack.proc.wait, 90) == 0, tail(vllm_stack.log)
    assert vllm_stack.leases.snapshot() == []
    with pytest.raises(httpx.ConnectError):  # vLLM stopped with its agent
        httpx.get(f"{engine}/health")
