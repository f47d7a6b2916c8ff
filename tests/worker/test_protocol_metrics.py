"""The Gateway API Inference Extension's gauges on the worker: queued and running requests and
KV-cache utilisation, under the names kubechat/engine_metrics.py gives them."""

from __future__ import annotations

import asyncio
import threading

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families
from transformers import LlamaConfig, LlamaForCausalLM

from kubechat.engine_metrics import PROTOCOL_METRICS
from kubechat.worker.batching_engine import BatchingEngine
from kubechat.worker.engine import GenerationRequest, SamplingParams
from tests.support.processes import until
from tests.worker.conftest import SEED_QUESTION, Worker

NAMES = PROTOCOL_METRICS["transformers"]


def gauges(url: str) -> dict[str, float]:
    """Every unlabelled sample on ``url``/metrics, by name."""
    text = httpx.get(f"{url}/metrics").text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def test_worker_exports_running_queued_and_kv_cache_use(worker: Worker) -> None:
    """Limit 4, no KV budget (CPU): three streams in the batch fill three quarters of it."""
    assert gauges(worker.url)[NAMES.kv_cache_utilization] == 0.0
    body = {
        "model": worker.model,
        "messages": [{"role": "user", "content": SEED_QUESTION}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    stop = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{worker.url}/v1/chat/completions", json=body, timeout=60) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return  # leaving closes the stream: the worker cancels the sequence

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        seen = until(
            lambda: (g := gauges(worker.url))[NAMES.running] == 3 and g,
            timeout=30,
            interval=0.02,
            what="three sequences running",
        )
        assert seen[NAMES.queued] == 0
        assert seen[NAMES.kv_cache_utilization] == 0.75
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    until(
        lambda: gauges(worker.url)[NAMES.kv_cache_utilization] == 0.0,
        timeout=30,
        what="an idle engine holds no KV cache",
    )


async def test_kv_cache_use_is_reserved_positions_over_the_budget() -> None:
    """With a KV budget the batch's reservations count: 2 rows of 10 + 1990 positions in 8000."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=4096,
    )
    engine = BatchingEngine(
        LlamaForCausalLM(config).eval(), "cpu", capacity=4, kv_budget_tokens=8000
    )
    await engine.start()
    greedy = SamplingParams(do_sample=False)
    streams = [
        engine.generate(GenerationRequest([1, *range(5 + i, 14 + i)], 1990, greedy))
        for i in range(2)
    ]
    try:
        for s in streams:
            await anext(s)  # both are in the batch now
        for _ in range(100):
            if engine.stats().running == 2:
                break
            await asyncio.sleep(0.01)
        stats = engine.stats()
        assert stats.running == 2
        assert stats.kv_cache_utilization == 2 * 2000 / 8000
    finally:
        for s in streams:
            await s.aclose()
        await engine.stop()
