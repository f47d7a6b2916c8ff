"""Throughput of kubechat against `transformers serve --continuous-batching`, on one model.

    python benchmarks/throughput.py [--model-dir DIR] [--concurrency 1 4 16 32] [--max-tokens 128]

Builds the benchmark model (benchmarks/bench_model.py) unless given one, then, one after the
other in this run: kubechat's worker directly, kubechat through its gateway, and `transformers
serve --continuous-batching` (skipped with a note if its serving extras are missing), each under
streaming chat load at every concurrency; plus HF `generate` on a static batch of the same size.
Prints output tokens/s, TTFT p50/p95, inter-token latency p50, errors, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import build
from load_client import RunResult, run
from processes import free_port, gateway, server, worker

LEVELS = [1, 4, 16, 32]


def static_batch_tokens_per_s(model_dir: Path, batch: int, max_tokens: int) -> float:
    """HF generate on ``batch`` equal-length prompts at once (the ceiling batching aims for)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([[1, *range(100, 116)]] * batch)
    with torch.inference_mode():
        model.generate(ids[:1], max_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        out = model.generate(
            ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False
        )
    seconds = time.perf_counter() - started
    return (out.shape[1] - ids.shape[1]) * batch / seconds


def measure(
    name: str, url: str, model: str, levels: list[int], max_tokens: int, ignore_eos: bool = True
) -> dict[int, RunResult]:
    """One run per concurrency, after a warm-up request; each row is printed as it is taken."""
    asyncio.run(run(url, model, concurrency=1, requests=1, max_tokens=8, ignore_eos=ignore_eos))
    out = {}
    for c in levels:
        out[c] = r = asyncio.run(
            run(
                url,
                model,
                concurrency=c,
                requests=max(8, 2 * c),
                max_tokens=max_tokens,
                ignore_eos=ignore_eos,
            )
        )
        print(row(name, c, r, None), flush=True)
        errors = {x.error for x in r.results if x.error}
        if errors:
            print(f"  errors: {sorted(errors)[:3]}", flush=True)
    return out


def transformers_serve(model_dir: Path, work: Path, levels: list[int], max_tokens: int):
    """Figures for `transformers serve --continuous-batching`, or None when it cannot start."""
    exe = shutil.which("transformers")
    if exe is None:
        print("transformers serve: the `transformers` command is missing; skipped")
        return None
    port = free_port()
    argv = [
        exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--dtype", "float32", "--continuous-batching",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        with server(argv, f"{url}/v1/models", work / "transformers-serve.log", timeout=300):
            # it refuses ignore_eos; the model's zeroed EOS row keeps replies at max_tokens
            return measure(
                "transformers serve CB", url, str(model_dir), levels, max_tokens, ignore_eos=False
            )
    except (RuntimeError, TimeoutError) as exc:
        print(f"transformers serve could not run ({exc}); install transformers[serving]")
        return None


def row(name: str, c: int, r: RunResult, base: RunResult | None) -> str:
    ratio = "     -"
    if base and base.output_tokens_per_s > 0:
        ratio = f"{r.output_tokens_per_s / base.output_tokens_per_s:6.2f}"
    return (
        f"{name:<22} {c:>4} {r.output_tokens_per_s:>9.1f} {r.ttft(0.5):>9.3f} "
        f"{r.ttft(0.95):>9.3f} {r.itl_p50() * 1000:>8.1f} {r.errors:>6} {ratio}"
    )


def main() -> int:
    """Run every server at every concurrency and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=LEVELS)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--skip-transformers-serve", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubechat-throughput-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or build(work / "bench-model")
        top = max(args.concurrency)
        print(f"model: {model_dir}; 1-min load average at start: {os.getloadavg()[0]:.2f}")
        leases = work / "leases"
        flags = ("--limit-worker-concurrency", str(top * 2), "--engine", "auto")
        with worker(model_dir, "bench", work, *flags, leases=leases) as direct:
            kubechat = measure(
                "kubechat worker", direct, "bench", args.concurrency, args.max_tokens
            )
            with gateway(leases, work, "bench") as gw:
                through = measure(
                    "kubechat via gateway", gw, "bench", args.concurrency, args.max_tokens
                )
        serve = None
        if not args.skip_transformers_serve:
            serve = transformers_serve(model_dir, work, args.concurrency, args.max_tokens)
        static = {
            c: static_batch_tokens_per_s(model_dir, c, args.max_tokens) for c in args.concurrency
        }
    print(
        f"\n{'server':<22} {'conc':>4} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'ITL ms':>8} {'errors':>6} {'vs serve':>6}"
    )
    for c in args.concurrency:
        base = serve[c] if serve else None
        print(row("kubechat worker", c, kubechat[c], base))
        print(row("kubechat via gateway", c, through[c], base))
        if serve:
            print(row("transformers serve CB", c, serve[c], None))
        print(f"{'HF generate, static':<22} {c:>4} {static[c]:>9.1f}")
    print(
        "\ngateway at concurrency 1 vs static batch of 1: "
        f"{through[min(args.concurrency)].output_tokens_per_s / static[min(args.concurrency)]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
