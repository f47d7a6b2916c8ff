"""Throughput of kubechat against `transformers serve --continuous-batching`, on one model.

    python benchmarks/throughput.py [--model-dir DIR] [--concurrency 1 4 16 32] [--max-tokens 128]
                                    [--rounds 2] [--skip-vllm]

Builds the benchmark model (benchmarks/bench_model.py) unless given one, starts kubechat's worker,
kubechat's gateway in front of it, and `transformers serve --continuous-batching` (skipped with a
note if its serving extras are missing) on the same model, then, one concurrency after the other,
puts each server under the same streaming chat load in turn and runs HF `generate` on a static
batch of the same size. Servers wait idle (no CPU) while another is measured; taking every
server's figure for a concurrency back to back keeps a change of machine load from tilting the
ratios; with ``--rounds N`` each concurrency is measured N times in turn (worker, gateway, serve,
static; again) and the rounds are pooled, which evens out the machine's drift (+-10 % from one
minute to the next on a shared 2-core VM). Prints output tokens/s, TTFT p50/p95, inter-token
latency p50, errors, the ratios to transformers serve, and the issue's targets.

With vLLM's environment present (kubechat/vllm_env.py; `bash .ci/install-vllm.sh` builds it) two
more rows are measured in the same turns: kubechat with ``engine: vllm`` through its own gateway
(the agent with vLLM as its child, as `kubechat up` runs it), and vLLM's raw server with the same
flags. vLLM's CPU backend computes on one core and keeps the other for its own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import build
from load_client import RunResult, run
from processes import free_port, gateway, running, worker
from vllm_servers import kubechat_vllm, vllm_serve

from kubechat.vllm_env import vllm_python

LEVELS = [1, 4, 16, 32]
KUBECHAT_WORKER, VIA_GATEWAY, SERVE = (
    "kubechat worker",
    "kubechat via gateway",
    "transformers serve CB",
)
VLLM_VIA_GATEWAY, VLLM_RAW = "kubechat vllm via gw", "vllm serve"


class StaticBatch:
    """HF ``generate`` on a static batch (the ceiling batching aims for); the model loads once."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def tokens_per_s(self, batch: int, max_tokens: int) -> float:
        """Output tokens/s of ``batch`` equal-length prompts generated together."""
        import torch

        ids = torch.tensor([[1, *range(100, 116)]] * batch)
        with torch.inference_mode():
            self.model.generate(ids[:1], max_new_tokens=4, do_sample=False)  # warm-up
            started = time.perf_counter()
            out = self.model.generate(
                ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False
            )
        return (out.shape[1] - ids.shape[1]) * batch / (time.perf_counter() - started)


@dataclass
class Server:
    """One server under test: its URL, the model name it serves, whether it takes ignore_eos."""

    name: str
    url: str
    model: str
    ignore_eos: bool = True


def load(server: Server, concurrency: int, max_tokens: int) -> RunResult:
    """One closed-loop run: ``concurrency`` users, four requests each (at least 16 in all)."""
    return asyncio.run(
        run(
            server.url,
            server.model,
            concurrency=concurrency,
            requests=max(16, 4 * concurrency),
            max_tokens=max_tokens,
            ignore_eos=server.ignore_eos,
        )
    )


@contextlib.contextmanager
def transformers_serve(model_dir: Path, work: Path) -> Iterator[Server | None]:
    """`transformers serve --continuous-batching` on ``model_dir``, or None when it cannot start."""
    exe = shutil.which("transformers")
    if exe is None:
        print("transformers serve: the `transformers` command is missing; skipped")
        yield None
        return
    port = free_port()
    argv = [
        exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--dtype", "float32", "--continuous-batching",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        log = work / "transformers-serve.log"
        context = running(argv, ready_url=f"{url}/v1/models", log_path=log, timeout=300, grace=30)
        context.__enter__()
    except (RuntimeError, TimeoutError) as exc:
        print(f"transformers serve could not run ({exc}); install transformers[serving]")
        yield None
        return
    try:
        # it refuses ignore_eos; the model's zeroed EOS row keeps replies at max_tokens
        yield Server(SERVE, url, str(model_dir), ignore_eos=False)
    finally:
        context.__exit__(None, None, None)


def pooled(runs: list[RunResult]) -> RunResult:
    """Several runs at one concurrency as one: their requests together over their summed time."""
    return RunResult(
        runs[0].concurrency,
        sum(r.seconds for r in runs),
        [x for r in runs for x in r.results],
    )


def row(name: str, c: int, r: RunResult, base: RunResult | None) -> str:
    """One line of the table."""
    ratio = "     -"
    if base and base.output_tokens_per_s > 0:
        ratio = f"{r.output_tokens_per_s / base.output_tokens_per_s:6.2f}"
    return (
        f"{name:<22} {c:>4} {r.output_tokens_per_s:>9.1f} {r.ttft(0.5):>9.3f} "
        f"{r.ttft(0.95):>9.3f} {r.itl_p50() * 1000:>8.1f} {r.errors:>6} {ratio}"
    )


HEADER = (
    f"{'server':<22} {'conc':>4} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} "
    f"{'ITL ms':>8} {'errors':>6} {'vs serve':>6}"
)


def targets(
    results: dict[str, dict[int, RunResult]], static: dict[int, float], levels: list[int]
) -> list[str]:
    """The issue's targets, each with the figure of this run and whether it is met."""
    lines = []
    gw, serve = results[VIA_GATEWAY], results.get(SERVE)
    if serve:
        for c in levels:
            ratio = gw[c].output_tokens_per_s / max(serve[c].output_tokens_per_s, 1e-9)
            need = 1.3 if c == 32 else 1.0
            lines.append(
                f"gateway / serve at {c:>2}: {ratio:.2f} (target >= {need}) {_met(ratio >= need)}"
            )
        top = max(levels)
        ours, theirs = gw[top].ttft(0.5), serve[top].ttft(0.5)
        lines.append(
            f"TTFT p50 at {top}: gateway {ours:.3f} s, serve {theirs:.3f} s "
            f"(target: no worse) {_met(ours <= theirs)}"
        )
    if VLLM_RAW in results and VLLM_VIA_GATEWAY in results:
        top = max(levels)
        ours, raw = results[VLLM_VIA_GATEWAY][top], results[VLLM_RAW][top]
        ratio = ours.output_tokens_per_s / max(raw.output_tokens_per_s, 1e-9)
        lines.append(
            f"engine: vllm via gateway / raw vllm at {top}: {ratio:.3f} (target >= 0.97: the "
            f"gateway costs at most 3 %) {_met(ratio >= 0.97)}"
        )
        for c in levels:
            mine = results[VLLM_VIA_GATEWAY][c].output_tokens_per_s
            lines.append(
                f"engine: vllm / engine: transformers via gateway at {c:>2}: "
                f"{mine / max(gw[c].output_tokens_per_s, 1e-9):.2f}"
            )
    if 1 in levels:
        ratio = gw[1].output_tokens_per_s / max(static[1], 1e-9)
        lines.append(
            f"gateway at 1 / static batch of 1: {ratio:.2f} (target >= 0.9) {_met(ratio >= 0.9)}"
        )
    return lines


def vllm_servers(up: contextlib.ExitStack, model_dir: Path, work: Path, limit: int) -> list[Server]:
    """kubechat with engine: vllm behind its own gateway, and raw vLLM (none without vLLM)."""
    try:
        python = vllm_python()
    except FileNotFoundError as exc:
        print(f"vllm: {exc}; skipped")
        return []
    leases = work / "vllm-leases"
    up.enter_context(kubechat_vllm(model_dir, "bench", work, python, limit, leases))
    via = up.enter_context(gateway(leases, work, "bench")).url
    raw = up.enter_context(vllm_serve(model_dir, "bench", work, python, limit)).url
    return [Server(VLLM_VIA_GATEWAY, via, "bench"), Server(VLLM_RAW, raw, "bench")]


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    """Start every server, then measure them concurrency by concurrency; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=LEVELS)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--skip-transformers-serve", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true", help="no engine: vllm rows")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measurements per server and concurrency, pooled"
    )
    args = parser.parse_args()
    levels = sorted(set(args.concurrency))
    with (
        tempfile.TemporaryDirectory(prefix="kubechat-throughput-") as tmp,
        contextlib.ExitStack() as up,
    ):
        work = Path(tmp)
        model_dir = args.model_dir or build(work / "bench-model")
        leases = work / "leases"
        flags = ("--limit-worker-concurrency", str(max(levels) * 2), "--engine", "auto")
        direct = up.enter_context(worker(model_dir, "bench", work, *flags, leases=leases)).url
        servers = [
            Server(KUBECHAT_WORKER, direct, "bench"),
            Server(VIA_GATEWAY, up.enter_context(gateway(leases, work, "bench")).url, "bench"),
        ]
        if not args.skip_transformers_serve:
            serve = up.enter_context(transformers_serve(model_dir, work))
            if serve is not None:
                servers.append(serve)
        if not args.skip_vllm:
            servers += vllm_servers(up, model_dir, work, max(levels) * 2)
        static_batch = StaticBatch(model_dir)
        for s in servers:  # warm-up
            asyncio.run(
                run(
                    s.url, s.model, concurrency=1, requests=1, max_tokens=8, ignore_eos=s.ignore_eos
                )
            )
        print(
            f"model: {model_dir}; {os.cpu_count()} CPUs; {args.rounds} round(s) pooled\n\n{HEADER}",
            flush=True,
        )
        results: dict[str, dict[int, RunResult]] = {s.name: {} for s in servers}
        static: dict[int, float] = {}
        for c in levels:
            load_before = os.getloadavg()[0]
            runs: dict[str, list[RunResult]] = {s.name: [] for s in servers}
            statics = []
            for _ in range(max(1, args.rounds)):
                for s in servers:
                    runs[s.name].append(load(s, c, args.max_tokens))
                statics.append(static_batch.tokens_per_s(c, args.max_tokens))
            for s in servers:
                results[s.name][c] = pooled(runs[s.name])
            static[c] = sum(statics) / len(statics)
            base = results[SERVE][c] if SERVE in results else None
            for s in servers:
                r = results[s.name][c]
                print(row(s.name, c, r, None if s.name == SERVE else base), flush=True)
                errors = sorted({x.error for x in r.results if x.error})
                if errors:
                    print(f"  errors: {errors[:3]}", flush=True)
            print(f"{'HF generate, static':<22} {c:>4} {static[c]:>9.1f}", flush=True)
            print(
                f"  (1-min load average before this concurrency: {load_before:.2f})\n", flush=True
            )
    print("\n".join(targets(results, static, levels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
