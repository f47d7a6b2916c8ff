"""Scale from zero in local mode: how long a request waits when no worker runs, and how long a
burst waits for the second worker.

    python benchmarks/cold_start.py [--starts 10] [--burst 8]

Runs ``kubechat up`` on ``examples/demo-autoscaled.yaml`` (the demo model; its window and delay
cut to seconds so that it idles back to zero between starts) and measures:

- cold start: from a request sent while no worker runs to its complete answer, ``--starts``
  times (each after the deployment went back to zero workers): p50 and p95;
- burst: from the first of ``--burst`` concurrent streams, sent to one warm worker, until the
  second worker's lease is live, and until a request is answered by it.

The demo model is built (or reused) in ``$KUBECHAT_CACHE`` as ``kubechat up`` does it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml
from processes import free_port, kubechat_argv, stop, tail, until, wait_http

from kubechat.discovery.local_store import LocalLeaseStore

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo-autoscaled.yaml"
MODEL = "kubechat-demo"
SEED = "Which mountain is the second highest one in the world?"


def manifest(folder: Path) -> Path:
    """The example with a 2 s window and a 2 s scale-down delay, one request per worker."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["autoscaling"].update(targetRequests=1, windowSeconds=2, scaleDownDelaySeconds=2)
    path = folder / "autoscaled.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def ask(url: str, max_tokens: int = 16, stream: bool = False) -> httpx.Response:
    """One greedy chat request; the whole answer read."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": SEED}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": stream,
        "stream": stream,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=900)
    r.raise_for_status()
    return r


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=10, help="cold starts to time")
    parser.add_argument("--burst", type=int, default=8, help="concurrent streams of the burst")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="kubechat-cold-start-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    leases = LocalLeaseStore(folder / "state" / "leases")
    argv = kubechat_argv(
        "up", str(manifest(folder)), "--port", str(port), "--state-dir", str(folder / "state"),
        "--no-ui",
    )  # fmt: skip
    log = folder / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{url}/health", 900, proc)
        until(lambda: "ready." in log.read_text(), 900, 0.5, f"kubechat up:\n{tail(log)}")

        def at_zero() -> bool:
            return not leases.snapshot()

        starts = []
        for i in range(args.starts):
            until(at_zero, 300, 0.25, "back to zero workers")
            t0 = time.perf_counter()
            ask(url)
            starts.append(time.perf_counter() - t0)
            print(f"cold start {i + 1}: {starts[-1]:.2f} s", flush=True)
        warm = []
        for _ in range(3):
            t0 = time.perf_counter()
            ask(url)
            warm.append(time.perf_counter() - t0)

        # burst: one warm worker, then many concurrent streams
        (first,) = until(lambda: [r.name for r in leases.snapshot() if r.ready], 300, 0.1, "1")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.burst + 1) as pool:
            streams = [pool.submit(ask, url, 200, True) for _ in range(args.burst)]
            until(
                lambda: [
                    r for r in leases.snapshot() if r.name != first and r.is_live(time.time())
                ],
                600,
                0.1,
                "a second live worker",
            )
            live = time.perf_counter() - t0
            served = None
            while served is None:
                r = ask(url, 4)
                if r.headers.get("x-kubechat-worker") != first:
                    served = time.perf_counter() - t0
            for s in streams:
                s.result()
        print(
            f"\ncold start from zero, {len(starts)} starts: p50 {percentile(starts, 0.5):.2f} s, "
            f"p95 {percentile(starts, 0.95):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}; "
            f"the same request warm: {statistics.median(warm):.2f} s)"
        )
        print(
            f"burst of {args.burst} streams on one worker: second worker live after {live:.2f} s, "
            f"serving a request after {served:.2f} s"
        )
    finally:
        stop(proc, 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
