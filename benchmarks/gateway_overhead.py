"""What the gateway costs: the same load sent to a worker directly and through the gateway.

    python benchmarks/gateway_overhead.py [--requests-per-user 4] [--max-tokens 128]

Builds (or reuses) the demo model in the kubechat cache, starts one worker publishing its lease
to a local store and a gateway reading it, then for concurrency 1 and 32 runs the load client
against the worker and against the gateway, one after the other, and prints output tokens/s of
both, their ratio (gateway / direct) and the time to first token the gateway adds (p50).

    python benchmarks/gateway_overhead.py --relay-cpu [--concurrency 16 256]

measures the gateway alone instead: in front of a worker stand-in that streams at almost no CPU
cost (benchmarks/fake_worker.py), it prints the gateway's own CPU time per relayed chunk (the
figure that decides how much it slows a worker sharing its cores) and per request; with
``--max-tokens 1`` the latter is what routing one request costs. It also prints the load
client's own CPU per chunk (it shares the cores with the servers in every benchmark here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_client import run
from processes import cpu_seconds, free_port, gateway, running, worker

MODEL = "kubechat-demo"


def main() -> int:
    """Run the comparison and print one row per concurrency."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests-per-user", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model-dir", type=Path, help="default: the demo model, built if needed")
    parser.add_argument(
        "--relay-cpu", action="store_true", help="the gateway's CPU per chunk over a fake worker"
    )
    args = parser.parse_args()
    if args.relay_cpu:
        return relay_cpu(args.concurrency, args.requests_per_user, args.max_tokens)

    from kubechat.demo_model.cache import ensure_demo_model

    model_dir = args.model_dir or ensure_demo_model(progress=True)
    top = max(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="kubechat-bench-") as tmp:
        work = Path(tmp)
        leases = work / "leases"
        print(f"model: {model_dir}; load: {os.getloadavg()[0]:.2f} (1-min average)")
        with (
            worker(
                model_dir, MODEL, work, "--limit-worker-concurrency", str(top + 8), leases=leases
            ) as direct,
            gateway(leases, work, MODEL) as through,
        ):
            direct_url, gateway_url = direct.url, through.url
            # one warm-up request each way so neither side pays first-call costs in the figures
            for url in (direct_url, gateway_url):
                asyncio.run(run(url, MODEL, concurrency=1, requests=1, max_tokens=8))
            header = (
                f"{'conc':>4} {'direct tok/s':>12} {'gateway tok/s':>13} {'ratio':>6} "
                f"{'TTFT p50 direct':>15} {'TTFT p50 gw':>11} {'added ms':>8} {'errors':>6}"
            )
            print(header)
            for c in args.concurrency:
                n = c * args.requests_per_user
                direct = asyncio.run(
                    run(direct_url, MODEL, concurrency=c, requests=n, max_tokens=args.max_tokens)
                )
                via = asyncio.run(
                    run(gateway_url, MODEL, concurrency=c, requests=n, max_tokens=args.max_tokens)
                )
                ratio = via.output_tokens_per_s / direct.output_tokens_per_s
                added = (via.ttft(0.5) - direct.ttft(0.5)) * 1000
                print(
                    f"{c:>4} {direct.output_tokens_per_s:>12.1f} {via.output_tokens_per_s:>13.1f} "
                    f"{ratio:>6.2f} {direct.ttft(0.5) * 1000:>13.1f}ms "
                    f"{via.ttft(0.5) * 1000:>9.1f}ms {added:>8.1f} "
                    f"{direct.errors + via.errors:>6}"
                )
    return 0


def relay_cpu(levels: list[int], requests_per_user: int, max_tokens: int) -> int:
    """Gateway CPU per relayed chunk, over a worker stand-in that streams a chunk every 20 ms."""
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="kubechat-relay-") as tmp:
        work, port = Path(tmp), free_port()
        leases = work / "leases"
        fake = [sys.executable, str(here / "fake_worker.py"), str(port), str(leases)]
        ready = f"http://127.0.0.1:{port}/health/ready"
        with (
            running(fake, ready_url=ready, log_path=work / "fake.log", grace=30),
            gateway(leases, work, "bench") as gw,
        ):
            asyncio.run(run(gw.url, "bench", concurrency=1, requests=1, max_tokens=8))
            print(
                f"{'conc':>4} {'chunks':>8} {'chunks/s':>9} {'gateway CPU s':>13} "
                f"{'us/chunk':>8} {'ms/request':>10} {'client us/chunk':>15} {'errors':>6}"
            )
            for c in levels:
                before, client_before = cpu_seconds(gw.pid), time.process_time()
                n = c * requests_per_user
                r = asyncio.run(
                    run(gw.url, "bench", concurrency=c, requests=n, max_tokens=max_tokens)
                )
                used = cpu_seconds(gw.pid) - before
                client = time.process_time() - client_before
                chunks = sum(x.output_tokens for x in r.results if x.ok)
                print(
                    f"{c:>4} {chunks:>8} {chunks / r.seconds:>9.0f} {used:>13.2f} "
                    f"{used / max(chunks, 1) * 1e6:>8.0f} "
                    f"{used / max(n - r.errors, 1) * 1e3:>10.2f} "
                    f"{client / max(chunks, 1) * 1e6:>15.0f} {r.errors:>6}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
