"""Fault scenarios on a local kubechat stack, with figures per scenario.

Starts two demo-model workers and a gateway as local processes (leases renewed every 0.5 s,
expiring after 2 s), then, each under 16 closed-loop streaming clients: kills a worker with
SIGKILL, stops one with SIGTERM (drain), freezes one with SIGSTOP, and restarts the gateway.
Then a burst of 4x a worker's capacity, at the worker and through the gateway with every
worker full. Per scenario it prints requests sent / completed / retried by the gateway / failed
with a clear error / lost (no answer at all), and the time until a dead worker left routing.
Last, the hand-written bad requests (benchmarks/bad_input.py) at a worker and at the gateway:
how many got the right 4xx OpenAI error, how many a 5xx.

    python benchmarks/faults.py                      # all scenarios on the demo model
    python benchmarks/faults.py --scenario kill9 --scenario sigterm

Exit status 1 if any request was lost, a dead or frozen worker stayed routable longer than the
lease duration, the overload burst got a 5xx or a 429 without Retry-After, or any bad request got
a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import bad_input
from fault_scenarios import MODEL, SCENARIOS, LocalStack, StackConfig, burst, rss_kib

EXTRA = ["overload", "bad-input"]
OK = {"200", "429"}  # a burst's clear answers (a 429 without Retry-After is counted apart)
# the default request body limits of `kubechat gateway` (--max-body-bytes) and `kubechat worker`
GATEWAY_BODY_LIMIT = WORKER_BODY_LIMIT = 4 * 1024 * 1024


def main() -> int:
    """Run the chosen scenarios and print their figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", action="append", choices=[*SCENARIOS, *EXTRA])
    p.add_argument("--model-dir", type=Path, help="default: the demo model (built once)")
    p.add_argument("--workdir", type=Path, help="logs and leases (default: a temp folder)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per scenario")
    args = p.parse_args()
    scenarios = args.scenario or [*SCENARIOS, *EXTRA]
    model_dir = args.model_dir
    if model_dir is None:
        from kubechat.demo_model.cache import ensure_demo_model

        model_dir = ensure_demo_model(progress=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubechat-faults-"))
    config = StackConfig(model_dir=Path(model_dir), workdir=workdir)
    stack = LocalStack(config)
    print(
        f"stack: {config.workers} workers (limit {config.limit} each), lease renew "
        f"{config.renew_interval:g}s / duration {config.lease_duration:g}s, gateway with its "
        f"default timeouts; logs in {workdir}",
        flush=True,
    )
    lost = server_errors = slow_exits = 0
    t0 = time.monotonic()
    try:
        stack.start()
        for name in scenarios:
            stack.ensure_workers()
            if name == "overload":
                server_errors += overload(stack)
                continue
            if name == "bad-input":
                server_errors += bad_requests(stack)
                continue
            report = asyncio.run(SCENARIOS[name](stack, duration=args.duration))
            lost += report.lost
            if report.left_routing is not None and report.left_routing > config.lease_duration:
                slow_exits += 1
            print(report.line(), flush=True)
    finally:
        stack.stop()
    print(
        f"total {time.monotonic() - t0:.0f}s; lost requests: {lost}; workers routable past "
        f"their lease: {slow_exits}; 5xx (or 429 without Retry-After) under overload or bad "
        f"input: {server_errors}"
    )
    return 1 if lost or server_errors or slow_exits else 0


def overload(stack: LocalStack) -> int:
    """A burst of 4x one worker's capacity at that worker, then 4x the whole stack's capacity
    through the gateway; status counts and memory before/after. Returns the answers that were
    neither 200 nor 429 with Retry-After."""
    worker = next(iter(stack.workers.values()))
    capacity = stack.config.limit
    pids = {"worker": worker.pid, "gateway": stack.gateway.pid}
    before = {k: rss_kib(p) for k, p in pids.items()}
    direct = asyncio.run(burst(worker.url, requests=4 * capacity))
    total = capacity * len(stack.workers)
    via_gateway = asyncio.run(burst(stack.url, requests=4 * total))
    after = {k: rss_kib(p) for k, p in pids.items()}
    rss = " ".join(f"{k}_rss={before[k] // 1024}->{after[k] // 1024}MiB" for k in pids)
    print(
        f"{'overload':<16} worker 4x{capacity}: {direct}  gateway 4x{total}: {via_gateway}  {rss}"
    )
    return sum(n for counts in (direct, via_gateway) for k, n in counts.items() if k not in OK)


def bad_requests(stack: LocalStack) -> int:
    """The hand-written bad requests at one worker and at the gateway; returns the 5xx count."""
    worker = next(iter(stack.workers.values()))
    cases = bad_input.cases(MODEL, stack.config.limit)
    targets = {
        "worker": (worker.url, [*cases, bad_input.oversized(MODEL, WORKER_BODY_LIMIT)]),
        "gateway": (stack.url, [*cases, bad_input.oversized(MODEL, GATEWAY_BODY_LIMIT)]),
    }
    server_errors = 0
    for name, (url, all_cases) in targets.items():
        found = asyncio.run(bad_input.send_all(url, all_cases))
        right = sum(wrong is None for _, wrong in found.values())
        fives = sum(status >= 500 for status, _ in found.values())
        server_errors += fives
        wrong = {k: w for k, (_, w) in found.items() if w is not None}
        print(
            f"{'bad input':<16} {name:<8} cases={len(found)}  right_4xx_openai_error={right}  "
            f"5xx={fives}  other={len(wrong) - fives}" + (f"  {wrong}" if wrong else ""),
            flush=True,
        )
    return server_errors


if __name__ == "__main__":
    sys.exit(main())
