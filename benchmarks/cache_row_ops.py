"""What a change of the batch's rows costs: a cohort leaving and one joining the KV cache.

    python benchmarks/cache_row_ops.py [--model-dir DIR] [--rows 32] [--width 140] [--cohort 8]

Builds the benchmark model (benchmarks/bench_model.py) unless given one, prefills ``--rows`` rows
of ``--width`` tokens, then times, in this process, a steady decode step, ``keep_rows`` dropping
a cohort, the decode step after it, ``append_rows`` adding a prefilled cohort, and the decode
step after that. The "extra" figures are what a change costs beyond a steady step (copying, and
any re-buffering the next step does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from bench_model import build
from transformers import AutoModelForCausalLM

from kubechat.worker.padded_cache import append_rows, keep_rows, positions, use_growing_layers
from kubechat.worker.serial_engine import output_cache


def main() -> int:
    """Print the costs, in milliseconds, as the median of five repetitions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--width", type=int, default=140)
    parser.add_argument("--cohort", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubechat-rowops-") as tmp:
        model_dir = args.model_dir or build(Path(tmp) / "bench-model")
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        figures: dict[str, list[float]] = {}
        with torch.inference_mode():
            for _ in range(5):
                for name, ms in measure(model, args.rows, args.width, args.cohort).items():
                    figures.setdefault(name, []).append(ms)
    for name, values in figures.items():
        print(f"{name:<48} {statistics.median(values):7.1f} ms")
    return 0


def _prefill(model: torch.nn.Module, rows: int, width: int) -> tuple[object, torch.Tensor]:
    ids = torch.randint(3, model.config.vocab_size, (rows, width))
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    use_growing_layers(cache)
    return cache, mask


T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - started) * 1000


def measure(model: torch.nn.Module, rows: int, width: int, cohort: int) -> dict[str, float]:
    """One repetition: the costs of a leave and a join, in milliseconds."""
    cache, mask = _prefill(model, rows, width)

    def decode(mask: torch.Tensor) -> torch.Tensor:
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = torch.full((mask.shape[0], 1), 5)
        model(
            input_ids=last,
            attention_mask=mask,
            position_ids=positions(mask, 1),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return mask

    for _ in range(2):
        mask = decode(mask)
    mask, steady = _timed(lambda: decode(mask))
    kept = rows - cohort
    mask, leave = _timed(lambda: keep_rows(cache, mask, list(range(kept))))
    mask, after_leave = _timed(lambda: decode(mask))
    mask, steady_small = _timed(lambda: decode(mask))
    new_cache, new_mask = _prefill(model, cohort, 15)
    mask, join = _timed(lambda: append_rows(cache, mask, new_cache, new_mask))
    mask, after_join = _timed(lambda: decode(mask))
    mask, steady_again = _timed(lambda: decode(mask))
    return {
        f"steady decode step ({rows} rows)": steady,
        f"keep_rows ({rows} -> {kept})": leave,
        "extra: leave + the next step over a steady one": leave + after_leave - steady_small,
        f"append_rows ({kept} + {cohort})": join,
        "extra: join + the next step over a steady one": join + after_join - steady_again,
    }


if __name__ == "__main__":
    sys.exit(main())
