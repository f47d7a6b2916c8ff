"""Continuous batching: 32 concurrent requests decode together and match HF generate token for
token; cancellation frees the slot; seeds reproduce; unsupported checkpoints fall back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from kubechat.worker.batching_engine import BatchingEngine
from kubechat.worker.engine import GenerationRequest, SamplingParams

GREEDY = SamplingParams(do_sample=False)


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    """The benchmark model's architecture (Llama, fp32, random weights), scaled down."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def workload(n: int = 32) -> list[tuple[list[int], int]]:
    """Different prompts (3..13 tokens) and output lengths (8..47 tokens)."""
    return [
        ([1] + [(7 * i + j) % 900 + 5 for j in range(3 + i % 11)], 8 + (i * 5) % 40)
        for i in range(n)
    ]


def reference(model, prompt: list[int], n: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


async def collect(engine, request: GenerationRequest) -> list[int]:
    return [s.token_id async for s in engine.generate(request) if s.token_id is not None]


@pytest.fixture(scope="module")
def engine(llama):
    """One engine for the module (its threads serve every test's event loop)."""
    e = BatchingEngine(llama, "cpu", capacity=64)
    asyncio.run(e.start())
    yield e
    asyncio.run(e.stop())


async def test_llama_batches(engine) -> None:
    assert engine.path == "batching"
    assert engine.fallback_reason is None


async def test_32_concurrent_greedy_requests_match_generate(engine, llama) -> None:
    jobs = workload()
    results = await asyncio.gather(
        *(collect(engine, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
    )
    expected = [reference(llama, p, n) for p, n in jobs]
    assert results == expected


async def test_greedy_is_unchanged_next_to_sampled_requests(engine, llama) -> None:
    jobs = workload(8)
    hot = SamplingParams(temperature=0.9, top_p=0.9, top_k=40)
    tasks = [collect(engine, GenerationRequest(p, n, GREEDY)) for p, n in jobs]
    tasks += [collect(engine, GenerationRequest(p, n, hot)) for p, n in jobs]
    results = await asyncio.gather(*tasks)
    assert results[:8] == [reference(llama, p, n) for p, n in jobs]
    assert [len(r) for r in results[8:]] == [n for _, n in jobs]


async def test_stop_token_ends_the_sequence(engine, llama) -> None:
    prompt, n = workload(1)[0]
    full = reference(llama, prompt, n)
    stop = full[5]
    first = full.index(stop)
    steps = [
        s async for s in engine.generate(GenerationRequest(prompt, n, GREEDY, frozenset({stop})))
    ]
    assert [s.token_id for s in steps[:-1]] == full[:first]
    assert steps[-1].token_id is None and steps[-1].finish_reason == "stop"


async def test_cancelled_request_frees_its_slot(engine) -> None:
    prompt, _ = workload(1)[0]
    stream = engine.generate(GenerationRequest(prompt, 400, GREEDY))
    got = [await anext(stream) for _ in range(3)]
    assert len(got) == 3 and engine.stats().running == 1
    await stream.aclose()
    assert engine.stats().running == 0
    after = await collect(engine, GenerationRequest(prompt, 5, GREEDY))
    assert len(after) == 5


async def test_seeded_sampling_is_reproducible(engine) -> None:
    prompt, _ = workload(1)[0]
    seeded = SamplingParams(temperature=1.0, top_p=1.0, seed=1234)
    a = await collect(engine, GenerationRequest(prompt, 20, seeded))
    b = await collect(engine, GenerationRequest(prompt, 20, seeded))
    c = await collect(
        engine, GenerationRequest(prompt, 20, SamplingParams(temperature=1.0, seed=99))
    )
    assert a == b and len(a) == 20
    assert a != c


async def test_demo_model_falls_back_to_serial_and_still_matches(demo_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, trust_remote_code=True).eval()
    e = BatchingEngine(model, "cpu", capacity=8)
    await e.start()
    try:
        assert e.path == "serial"
        assert e.fallback_reason
        jobs = [([1, 3, 20 + i, 30 + i, 4], 10) for i in range(4)]
        results = await asyncio.gather(
            *(collect(e, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
        )
        assert results == [reference(model, p, n) for p, n in jobs]
    finally:
        await e.stop()
