"""Overload: bursts beyond a worker's capacity, and 2,000 concurrent streams through the gateway.

A full worker answers 429 with Retry-After at once (nothing queues unseen, nothing is dropped);
the gateway passes that on when every worker is full; memory stays flat across bursts; the
gateway carries 2,000 concurrent streams to fast stub workers without errors or leaked sockets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import fault_scenarios as fs
from tests.support.processes import free_port, kubechat_argv, running

from .conftest import AUTH, WORKER_LIMIT, Served

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BURST = 4 * WORKER_LIMIT


def check_burst(counts: dict[str, int]) -> None:
    assert sum(counts.values()) == BURST
    assert set(counts) <= {"200", "429"}, counts  # no 5xx, and every 429 has Retry-After
    assert counts.get("200", 0) >= WORKER_LIMIT
    assert counts.get("429", 0) >= 1


def test_a_burst_of_4x_capacity_gets_429_with_retry_after(
    real_worker: Served, keyed_gateway: Served
) -> None:
    check_burst(asyncio.run(fs.burst(real_worker.url, requests=BURST, max_tokens=32)))
    # through the gateway, with the only worker full: the 429 comes back, nothing hangs
    t0 = time.monotonic()
    check_burst(
        asyncio.run(fs.burst(keyed_gateway.url, requests=BURST, max_tokens=32, headers=AUTH))
    )
    assert time.monotonic() - t0 < 60


def test_memory_stays_flat_across_bursts(real_worker: Served, keyed_gateway: Served) -> None:
    def burst() -> None:
        asyncio.run(fs.burst(keyed_gateway.url, requests=BURST, max_tokens=16, headers=AUTH))
        asyncio.run(fs.burst(real_worker.url, requests=BURST, max_tokens=16))

    burst()  # warm-up: allocator pools, compiled kernels
    before = {p: fs.rss_kib(p) for p in (real_worker.pid, keyed_gateway.pid)}
    for _ in range(3):
        burst()
    after = {p: fs.rss_kib(p) for p in (real_worker.pid, keyed_gateway.pid)}
    growth_mib = {p: (after[p] - before[p]) / 1024 for p in before}
    assert growth_mib[real_worker.pid] < 64, growth_mib
    assert growth_mib[keyed_gateway.pid] < 16, growth_mib


STREAMS = 2000


@pytest.fixture(scope="module")
def stub_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway process over four stub workers (0.3 s between chunks) in another process."""
    base = tmp_path_factory.mktemp("stubs")
    leases = base / "leases"
    fleet = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.stub_fleet", str(leases), "4", "slow_stream"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fleet.stdout.readline().strip() == "ready"
        port = free_port()
        # generous timeouts: this test is about the gateway's own limits (sockets, pools,
        # backlog), not about stubs starved of CPU on a shared 2-core machine
        argv = kubechat_argv(
            "gateway",
            "--port",
            str(port),
            "--lease-store",
            f"local:{leases}",
            "--connect-timeout",
            "30",
            "--first-chunk-timeout",
            "120",
            "--retry-deadline",
            "120",
        )
        url = f"http://127.0.0.1:{port}"
        with running(argv, ready_url=f"{url}/health", log_path=base / "gateway.log") as proc:
            yield Served(url, base / "gateway.log", proc.pid)
    finally:
        fleet.kill()
        fleet.wait(10)


async def many_streams(url: str, n: int) -> dict[str, int]:
    """``n`` concurrent streams; how many ended each way."""
    outcome: dict[str, int] = {}
    limits = httpx.Limits(max_connections=n + 16, max_keepalive_connections=n)
    timeout = httpx.Timeout(120.0, pool=120.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:

        async def one() -> None:
            try:
                async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                    text = ""
                    done = False
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            event = json.loads(line[6:])
                            text += event["choices"][0]["delta"].get("content", "")
                    ok = r.status_code == 200 and done and text.startswith("from stub-")
                    key = "ok" if ok else f"status {r.status_code}"
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            outcome[key] = outcome.get(key, 0) + 1

        await asyncio.gather(*(one() for _ in range(n)))
    return outcome


def gateway_warnings(served: Served) -> str:
    lines = served.log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if " WARNING " in line or " ERROR " in line)[-3000:]


def test_2000_concurrent_streams_without_errors_or_leaked_descriptors(
    stub_gateway: Served,
) -> None:
    assert asyncio.run(many_streams(stub_gateway.url, 20)) == {"ok": 20}  # warm-up
    fds_before = fs.open_fds(stub_gateway.pid)
    t0 = time.monotonic()
    got = asyncio.run(many_streams(stub_gateway.url, STREAMS))
    assert got == {"ok": STREAMS}, gateway_warnings(stub_gateway)
    first = time.monotonic() - t0
    time.sleep(1.0)
    fds_after_first = fs.open_fds(stub_gateway.pid)
    got = asyncio.run(many_streams(stub_gateway.url, STREAMS))
    assert got == {"ok": STREAMS}, gateway_warnings(stub_gateway)
    time.sleep(1.0)
    fds_after_second = fs.open_fds(stub_gateway.pid)
    print(
        f"2000 streams in {first:.1f}s; gateway fds {fds_before} -> {fds_after_first} -> "
        f"{fds_after_second}"
    )
    # idle upstream connections are kept for reuse, up to the pool's keep-alive limit of 256;
    # beyond that nothing stays open: a leak would add thousands per round
    assert fds_after_first - fds_before <= 256 + 32
    assert fds_after_second - fds_before <= 256 + 32


def test_the_gateway_raises_a_low_open_files_limit(tmp_path: Path) -> None:
    """Started with the common soft limit of 1,024 open files (about 500 streams), the gateway
    raises it to the hard limit."""
    port = free_port()
    argv = kubechat_argv("gateway", "--port", str(port), "--lease-store", f"local:{tmp_path}")
    shell = ["sh", "-c", 'ulimit -Sn 1024 && exec "$@"', "sh", *argv]
    url = f"http://127.0.0.1:{port}"
    with running(shell, ready_url=f"{url}/health", log_path=tmp_path / "gw.log") as proc:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line
    assert hard == "unlimited" or int(hard) > 1024
