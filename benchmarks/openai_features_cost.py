"""What structured outputs and logprobs cost the batching engine, against plain decoding.

    python benchmarks/openai_features_cost.py [--model-dir DIR] [--concurrency 16]
                                              [--requests 48] [--max-tokens 64] [--rounds 2]

Builds the benchmark model (benchmarks/bench_model.py) unless given one, starts one kubechat
worker on it, and puts it under the same streaming chat load (``--concurrency`` requests in
flight, greedy, ``--max-tokens`` output tokens each) four ways in turn: plain; ``logprobs`` with
``top_logprobs: 5``; ``response_format`` ``json_schema`` (an object of 40 required strings, so
every request still decodes ``--max-tokens`` tokens under the grammar instead of ending early);
and both. With ``--rounds N`` the four are measured N times in turn and pooled, so the machine's
drift does not tilt the ratios. Other processes on a shared machine only ever take throughput
away (a burst can cut a round to a tenth), so, as timeit keeps the best time, each mode is judged
by its best round against plain decoding's best round; the median of the per-round ratios is
printed beside it. Prints output tokens/s (best round and pooled), TTFT p50 and inter-token
latency p50 per mode (pooled), both ratios, and the target (at most 10 % fewer tokens/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import build
from load_client import RunResult, run
from processes import worker

NAME = "bench"
TARGET = 0.90  # tokens/s of a feature over plain decoding, at least
# 40 required string fields: no answer fits in --max-tokens, so every request decodes as many
# tokens as a plain one; no length bounds (counted repetitions make llguidance's lexer several
# times slower per token, a cost of such schemas rather than of decoding under a grammar)
LONG_OBJECT = {
    "type": "object",
    "properties": {f"field_{i}": {"type": "string"} for i in range(40)},
    "required": [f"field_{i}" for i in range(40)],
    "additionalProperties": False,
}
STRUCTURED = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "long_object", "schema": LONG_OBJECT, "strict": True},
    }
}
LOGPROBS = {"logprobs": True, "top_logprobs": 5}
MODES = {
    "plain": {},
    "logprobs (top 5)": LOGPROBS,
    "json_schema": STRUCTURED,
    "json_schema + logprobs": {**STRUCTURED, **LOGPROBS},
}


def pooled(runs: list[RunResult]) -> RunResult:
    """One result of several runs at the same concurrency (their requests and seconds summed)."""
    return RunResult(
        runs[0].concurrency,
        sum(r.seconds for r in runs),
        [x for r in runs for x in r.results],
    )


async def measure(url: str, args: argparse.Namespace) -> dict[str, list[RunResult]]:
    """Every mode ``args.rounds`` times, in turn; each mode's runs, round by round."""
    runs: dict[str, list[RunResult]] = {mode: [] for mode in MODES}
    # one short warm-up per mode: the grammar compiler and token table are built on first use
    for extra in MODES.values():
        await run(url, NAME, concurrency=2, requests=2, max_tokens=4, extra=extra)
    for round_ in range(args.rounds):
        for mode, extra in MODES.items():
            result = await run(
                url,
                NAME,
                concurrency=args.concurrency,
                requests=args.requests,
                max_tokens=args.max_tokens,
                extra=extra,
            )
            runs[mode].append(result)
            print(
                f"  round {round_ + 1} {mode:24s} {result.output_tokens_per_s:8.1f} tok/s"
                f"  errors {result.errors}",
                flush=True,
            )
    return runs


def best(runs: list[RunResult]) -> float:
    """The best round's output tokens/s."""
    return max(r.output_tokens_per_s for r in runs)


def median_ratio(runs: dict[str, list[RunResult]], mode: str) -> float:
    """The median over rounds of ``mode``'s tokens/s over plain decoding's in the same round."""
    return statistics.median(
        r.output_tokens_per_s / p.output_tokens_per_s
        for r, p in zip(runs[mode], runs["plain"], strict=True)
    )


def report(runs: dict[str, list[RunResult]], concurrency: int) -> None:
    """The table: tokens/s, TTFT and ITL per mode, and the ratio to plain decoding."""
    print(f"\nconcurrency {concurrency}, benchmark model, batching engine")
    print(
        f"{'mode':24s} {'best':>7s} {'pooled':>7s} {'best/plain':>10s} {'median':>7s}"
        f" {'TTFT p50':>9s} {'ITL p50':>8s} errors"
    )
    plain = best(runs["plain"])
    for mode, mode_runs in runs.items():
        r = pooled(mode_runs)
        print(
            f"{mode:24s} {best(mode_runs):7.1f} {r.output_tokens_per_s:7.1f}"
            f" {best(mode_runs) / plain:10.1%} {median_ratio(runs, mode):7.1%}"
            f" {r.ttft(0.5) * 1000:7.0f}ms {r.itl_p50() * 1000:6.1f}ms {r.errors:6d}"
        )
    worst = min(best(mode_runs) / plain for mode_runs in runs.values())
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"target: every mode at least {TARGET:.0%} of plain tokens/s: {verdict} ({worst:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubechat-features-") as tmp:
        workdir = Path(tmp)
        model_dir = args.model_dir or build(workdir / "bench-model")
        limit = ("--limit-worker-concurrency", str(args.concurrency))
        with worker(model_dir, NAME, workdir, *limit) as served:
            runs = asyncio.run(measure(served.url, args))
        report(runs, args.concurrency)


if __name__ == "__main__":
    main()
