"""The agent beside real vLLM: the lease it renews, the load it reports, the drain on SIGTERM.

One vLLM server (the benchmark model, the agent's child as in local mode) serves the whole
module; the last test drains and stops it.
"""

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
from openai import AsyncOpenAI, OpenAI

from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord
from kubechat.engine_metrics import PROTOCOL_METRICS
from tests.support.processes import free_port, kubechat_argv, stop, tail, until
from tests.support.vllm import (
    VLLM_START_TIMEOUT,
    VLLM_TEST_ENV,
    greedy_tokens,
    streamed_greedy,
    vllm_server_argv,
)

pytestmark = pytest.mark.slow

MODEL = "bench"
# The benchmark model's end-of-sequence logit is zeroed: greedy decoding never stops early, so
# every request runs to max_tokens (sampling could still draw it).
GREEDY = {"temperature": 0.0}
CAPACITY = 4  # vLLM's --max-num-seqs and the agent's --capacity: a fifth request waits


@dataclass
class Pair:
    """``kubechat agent`` with vLLM as its child, and the lease folder it writes to."""

    agent: subprocess.Popen
    engine_url: str
    leases: LocalLeaseStore
    log: Path

    def record(self, name: str = "vllm-0") -> WorkerRecord | None:
        """The lease ``name`` as a reader sees it now (None if there is none)."""
        return next((r for r in self.leases.snapshot() if r.name == name), None)

    def client(self) -> AsyncOpenAI:
        """The openai SDK on vLLM itself (where the gateway sends the lease's requests)."""
        return AsyncOpenAI(base_url=f"{self.engine_url}/v1", api_key="none", max_retries=0)


def start_agent(argv_tail: list[str], log: Path) -> subprocess.Popen:
    """``kubechat agent ARGS`` in its own process group, output to ``log``."""
    env = {**os.environ, **VLLM_TEST_ENV, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            kubechat_argv("agent", *argv_tail),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def pair(vllm_python: Path, bench_model_dir: Path, tmp_path_factory) -> Iterator[Pair]:
    """The agent and its vLLM child, ready (the lease says so)."""
    base = tmp_path_factory.mktemp("agent")
    port = free_port()
    engine_url = f"http://127.0.0.1:{port}"
    log = base / "agent.log"
    agent = start_agent(
        [
            "--engine-url",
            engine_url,
            "--lease-store",
            f"local:{base / 'leases'}",
            "--worker-name",
            "vllm-0",
            "--deployment",
            "bench",
            "--capacity",
            str(CAPACITY),
            "--poll-interval",
            "0.25",
            "--",
            *vllm_server_argv(vllm_python, bench_model_dir, port, name=MODEL, max_num_seqs=4),
        ],
        log,
    )
    pair = Pair(agent, engine_url, LocalLeaseStore(base / "leases"), log)
    try:
        deadline = time.monotonic() + VLLM_START_TIMEOUT
        while not ((r := pair.record()) and r.ready):
            assert agent.poll() is None, f"agent exited {agent.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no ready lease:\n{tail(log)}"
            time.sleep(0.5)
        yield pair
    finally:
        stop(agent, grace=60)


def test_lease_names_the_engine_and_its_models(pair: Pair) -> None:
    record = pair.record()
    assert record is not None
    assert record.ready and not record.draining
    assert record.address == pair.engine_url  # the gateway talks to vLLM itself
    assert record.models == (MODEL,)  # read from vLLM's /v1/models: no --model-names given
    assert record.deployment == "bench"
    assert record.capacity == CAPACITY
    assert record.is_live(time.time())
    # what the gateway does with the lease: send an OpenAI request to its address
    reply = OpenAI(base_url=f"{record.address}/v1", api_key="none").chat.completions.create(
        model=record.models[0],
        messages=[{"role": "user", "content": "def main():"}],
        max_tokens=8,
        **GREEDY,
    )
    assert reply.usage.completion_tokens == 8


async def test_lease_carries_vllm_running_and_waiting_requests(pair: Pair) -> None:
    client = pair.client()

    asks = [
        asyncio.create_task(greedy_tokens(client, MODEL, "import os", 500))
        for _ in range(CAPACITY + 2)
    ]
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(t.done() for t in asks):
        record = pair.record()
        if record is not None:
            seen.append((record.in_flight, record.queued))
            if record.in_flight == CAPACITY + 2 and record.queued == 2:
                break
        await asyncio.sleep(0.1)
    # all six held by vLLM: four running (its --max-num-seqs), two waiting
    assert (CAPACITY + 2, 2) in seen, seen
    assert await asyncio.gather(*asks) == [500] * (CAPACITY + 2)
    await asyncio.to_thread(
        until, lambda: pair.record().in_flight == 0, 10, 0.1, "lease back to no load"
    )


async def test_metric_names_are_vllm_own(pair: Pair) -> None:
    from kubechat.agent.engine_probe import parse_load

    text = httpx.get(f"{pair.engine_url}/metrics").text
    reading = parse_load(text, PROTOCOL_METRICS["vllm"])
    assert reading.healthy and reading.busy == 0
    assert 0.0 <= reading.kv_cache_utilization <= 1.0
    without_kv = "\n".join(
        line for line in text.splitlines() if "vllm:kv_cache_usage_perc" not in line
    )
    with pytest.raises(ValueError, match="no vllm:kv_cache_usage_perc"):
        parse_load(without_kv, PROTOCOL_METRICS["vllm"])


def test_agent_beside_a_running_engine_leaves_it_running(pair: Pair, tmp_path: Path) -> None:
    """The pod's layout: vLLM in its own container, the agent only reads it. SIGTERM with
    nothing in flight: the lease goes, the engine stays."""
    leases = LocalLeaseStore(tmp_path / "leases")
    side = start_agent(
        [
            "--engine-url",
            pair.engine_url,
            "--lease-store",
            f"local:{tmp_path / 'leases'}",
            "--worker-name",
            "side",
            "--model-names",
            MODEL,
            "--drain-settle",
            "0.5",
        ],
        tmp_path / "side.log",
    )
    try:
        until(lambda: leases.snapshot() and leases.snapshot()[0].ready, 30, 0.2, "side ready")
        os.killpg(side.pid, signal.SIGTERM)
        assert side.wait(20) == 0, tail(tmp_path / "side.log")
        assert leases.snapshot() == []  # a clean exit leaves no lease behind
        assert httpx.get(f"{pair.engine_url}/health").status_code == 200
    finally:
        stop(side)


def test_agent_exits_with_its_engine(tmp_path: Path) -> None:
    """A child engine that dies takes the agent down (the runner restarts the pair), leaving
    no lease behind."""
    leases = LocalLeaseStore(tmp_path / "leases")
    port = free_port()
    agent = start_agent(
        [
            "--engine-url",
            f"http://127.0.0.1:{port}",
            "--lease-store",
            f"local:{tmp_path / 'leases'}",
            "--worker-name",
            "dies",
            "--",
            "python3",
            "-c",
            "import time, sys; time.sleep(1.5); sys.exit(3)",
        ],
        tmp_path / "dies.log",
    )
    try:
        # while the engine runs (and answers nothing) the lease says not ready
        until(lambda: leases.snapshot(), 10, 0.1, "a lease")
        assert not leases.snapshot()[0].ready
        assert agent.wait(20) == 3
        assert "the engine exited with code 3" in (tmp_path / "dies.log").read_text()
        assert leases.snapshot() == []
    finally:
        stop(agent)


def test_bad_engine_url_is_a_usage_error() -> None:
    done = subprocess.run(
        kubechat_argv("agent", "--engine-url", "localhost:8000"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--engine-url: not an http(s) URL: 'localhost:8000'" in done.stderr


async def test_sigterm_drains_then_stops_vllm(pair: Pair) -> None:
    """Last in the module: it stops the pair. Streams in flight at SIGTERM all complete."""
    client = pair.client()

    streams = [
        asyncio.create_task(streamed_greedy(client, MODEL, "class A:", 300))
        for _ in range(CAPACITY)
    ]
    await asyncio.to_thread(
        until, lambda: pair.record().in_flight == CAPACITY, 30, 0.05, "streams running"
    )
    os.killpg(pair.agent.pid, signal.SIGTERM)
    record = await asyncio.to_thread(
        until, lambda: (r := pair.record()) and r.draining and r, 5, 0.05, "lease draining"
    )
    assert not record.is_live(time.time())  # the gateway stops sending here at once
    assert record.in_flight == CAPACITY
    assert await asyncio.gather(*streams) == [(300, "length")] * CAPACITY  # nothing lost
    code = await asyncio.to_thread(pair.agent.wait, 60)
    assert code == 0, tail(pair.log)
    assert pair.record() is None
    with pytest.raises(httpx.ConnectError):  # vLLM was stopped with its agent
        httpx.get(f"{pair.engine_url}/health")
