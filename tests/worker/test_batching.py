"""Continuous batching: 32 concurrent requests decode together and match HF generate token for
token (the benchmark model itself with prompts up to 200 tokens, a scaled-down Llama, the demo
model); long prompts are chunked; the KV budget bounds the
batch; cancellation frees the slot; per-request sampling and seeds hold inside a batch; a
checkpoint that cannot batch falls back to the serial path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from kubechat.worker.batching_engine import BatchingEngine, prefill_group
from kubechat.worker.engine import GenerationRequest, SamplingParams
from kubechat.worker.serial_engine import SerialEngine
from tests.support.checkpoints import tiny_llama

GREEDY = SamplingParams(do_sample=False)


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    """The benchmark model's architecture (Llama, fp32, random weights), scaled down."""
    return tiny_llama()


def workload(n: int = 32) -> list[tuple[list[int], int]]:
    """Different prompts (3..13 tokens) and output lengths (8..47 tokens)."""
    return [
        ([1] + [(7 * i + j) % 900 + 5 for j in range(3 + i % 11)], 8 + (i * 5) % 40)
        for i in range(n)
    ]


def reference(model, prompt: list[int], n: int) -> list[int]:
    """HF generate, alone, greedy (the demo model's default repetition penalty switched off)."""
    out = model.generate(
        torch.tensor([prompt]),
        do_sample=False,
        repetition_penalty=1.0,
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


async def test_long_prompt_is_prefilled_in_chunks_next_to_running_streams(llama) -> None:
    """A 300-token prompt in chunks of 32 tokens, while short requests decode: all match."""
    e = BatchingEngine(llama, "cpu", capacity=8, max_batch_tokens=32)
    await e.start()
    try:
        long_prompt = [1] + [(13 * j) % 900 + 5 for j in range(299)]
        jobs = [*workload(4), (long_prompt, 12)]
        results = await asyncio.gather(
            *(collect(e, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
        )
        assert results == [reference(llama, p, n) for p, n in jobs]
    finally:
        await e.stop()


async def test_kv_budget_bounds_the_batch_and_the_rest_waits(llama) -> None:
    jobs = workload(6)
    widest = max(len(p) + n for p, n in jobs)
    e = BatchingEngine(llama, "cpu", capacity=6, kv_budget_tokens=2 * widest)
    await e.start()
    try:
        tasks = [
            asyncio.ensure_future(collect(e, GenerationRequest(p, n, GREEDY))) for p, n in jobs
        ]
        seen_queued = 0
        while not all(t.done() for t in tasks):
            seen_queued = max(seen_queued, e.stats().queued)
            await asyncio.sleep(0.005)
        assert seen_queued >= 3  # at most 2 sequences of this width fit at once
        assert [t.result() for t in tasks] == [reference(llama, p, n) for p, n in jobs]
    finally:
        await e.stop()


async def test_cancelled_request_frees_its_slot(engine) -> None:
    prompt, _ = workload(1)[0]
    stream = engine.generate(GenerationRequest(prompt, 400, GREEDY))
    got = [await anext(stream) for _ in range(3)]
    assert len(got) == 3 and engine.stats().running == 1
    await stream.aclose()
    assert engine.stats().running == 0
    after = await collect(engine, GenerationRequest(prompt, 5, GREEDY))
    assert len(after) == 5


async def test_cancelling_the_running_request_starts_the_waiting_one(llama) -> None:
    e = BatchingEngine(llama, "cpu", capacity=1)
    await e.start()
    try:
        (prompt, _), (other, n) = workload(2)
        first = e.generate(GenerationRequest(prompt, 10_000, GREEDY))
        await anext(first)
        second = asyncio.ensure_future(collect(e, GenerationRequest(other, n, GREEDY)))
        await asyncio.sleep(0.3)
        assert not second.done() and e.stats().queued == 1
        await first.aclose()
        assert await asyncio.wait_for(second, 30) == reference(llama, other, n)
    finally:
        await e.stop()


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


async def test_seeded_and_penalised_requests_inside_a_batch_match_them_alone(engine, llama) -> None:
    """Per-request sampling in one batch: each request gets what it would get on its own."""
    prompt, _ = workload(1)[0]
    kinds = [
        SamplingParams(temperature=0.8, top_k=50, top_p=0.9, seed=7),
        SamplingParams(do_sample=False, repetition_penalty=1.3),
        SamplingParams(temperature=1.2, seed=3, presence_penalty=0.5, frequency_penalty=0.4),
    ]
    serial = SerialEngine(llama, "cpu")
    await serial.start()
    try:
        alone = [await collect(serial, GenerationRequest(prompt, 24, k)) for k in kinds]
    finally:
        await serial.stop()
    noise = [collect(engine, GenerationRequest(p, n, GREEDY)) for p, n in workload(6)]
    together = await asyncio.gather(
        *(collect(engine, GenerationRequest(prompt, 24, k)) for k in kinds), *noise
    )
    assert together[:3] == alone
    penalised = together[1]
    assert penalised != reference(llama, prompt, 24)  # the penalty did change the output


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory: pytest.TempPathFactory):
    """The benchmark model itself (benchmarks/bench_model.py: 33.5M parameters, vocab 8000)."""
    from benchmarks.bench_model import build

    path = build(tmp_path_factory.mktemp("bench-model"))
    return AutoModelForCausalLM.from_pretrained(path).eval()


def mixed_workload(n: int = 32) -> list[tuple[list[int], int]]:
    """Prompts of 3 to 200 tokens (some longer than a prefill chunk of 64) and 6 to 29 outputs."""
    lengths = [3 + (i * 37) % 198 for i in range(n)]
    return [
        ([1] + [(11 * i + 7 * j) % 7000 + 100 for j in range(length - 1)], 6 + (i * 3) % 24)
        for i, length in enumerate(lengths)
    ]


async def test_benchmark_model_batches_32_mixed_requests_like_generate(bench_model) -> None:
    """The benchmark model, 32 concurrent greedy requests of mixed prompt and output lengths,
    prefilled in 64-token chunks next to decoding rows: every token as HF generate alone."""
    e = BatchingEngine(bench_model, "cpu", capacity=32, max_batch_tokens=64)
    await e.start()
    try:
        assert e.path == "batching"
        jobs = mixed_workload()
        results = await asyncio.gather(
            *(collect(e, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
        )
        assert results == [reference(bench_model, p, n) for p, n in jobs]
    finally:
        await e.stop()


@pytest.fixture(scope="module")
def demo_model(demo_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(demo_model_dir, trust_remote_code=True).eval()


async def test_demo_model_batches_32_concurrent_requests_like_generate(demo_model) -> None:
    """The demo model (remote code, ALiBi) batches: left padding is masked by its bias."""
    e = BatchingEngine(demo_model, "cpu", capacity=32)
    await e.start()
    try:
        assert e.path == "batching" and e.fallback_reason is None
        jobs = [(p, n // 2 + 4) for p, n in workload(32)]
        results = await asyncio.gather(
            *(collect(e, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
        )
        assert results == [reference(demo_model, p, n) for p, n in jobs]
    finally:
        await e.stop()


class MaskBlindLlama(LlamaForCausalLM):
    """A checkpoint whose forward ignores the attention mask (as some remote code does)."""

    def forward(self, *args, attention_mask=None, position_ids=None, **kwargs):
        return super().forward(*args, **kwargs)


async def test_checkpoint_that_cannot_batch_is_served_serially(llama) -> None:
    blind = MaskBlindLlama(llama.config).eval()
    blind.load_state_dict(llama.state_dict())
    e = BatchingEngine(blind, "cpu", capacity=8)
    await e.start()
    try:
        assert e.path == "serial"
        assert "differs" in e.fallback_reason
        jobs = workload(4)
        results = await asyncio.gather(
            *(collect(e, GenerationRequest(p, n, GREEDY)) for p, n in jobs)
        )
        assert results == [reference(llama, p, n) for p, n in jobs]
    finally:
        await e.stop()


def test_a_burst_of_newcomers_is_prefilled_a_group_at_a_time() -> None:
    # 32 prompts of 20 tokens with 256-token chunks: 12 per group, so the first 12 stream after
    # one chunk instead of after the whole burst's 640 tokens
    assert prefill_group([20] * 32, 256) == 12
    # padding counts: the 100-token prompt would pad the group of four to 400 tokens
    assert prefill_group([10, 10, 10, 100], 256) == 3
    # whatever the lengths, at least one goes (a long prompt alone is cut into columns)
    assert prefill_group([1000, 5], 256) == 1
    assert prefill_group([5, 5], 256) == 2


POISON = 999  # a token id this test checkpoint refuses to prefill


class RefusesOneTokenLlama(LlamaForCausalLM):
    """A checkpoint whose forward fails on one token id (like a prompt too long for the memory
    left: the forward raises for that newcomer only)."""

    def forward(self, input_ids=None, **kwargs):
        if input_ids is not None and bool((input_ids == POISON).any()):
            raise RuntimeError("out of memory while prefilling")
        return super().forward(input_ids=input_ids, **kwargs)


async def test_a_failing_prefill_ends_only_its_own_request(llama) -> None:
    model = RefusesOneTokenLlama(llama.config).eval()
    model.load_state_dict(llama.state_dict())
    e = BatchingEngine(model, "cpu", capacity=8)
    await e.start()
    try:
        assert e.path == "batching"
        jobs = [(p, 40) for p, _ in workload(4)]
        first_tokens = asyncio.Event()

        async def running(prompt: list[int], n: int) -> list[int]:
            tokens = []
            async for step in e.generate(GenerationRequest(prompt, n, GREEDY)):
                if step.token_id is not None:
                    tokens.append(step.token_id)
                    if len(tokens) == 3:
                        first_tokens.set()
            return tokens

        async def poisoned() -> str:
            await first_tokens.wait()  # joins while the others decode
            with pytest.raises(Exception) as failure:
                await collect(e, GenerationRequest([1, 5, POISON, 6], 8, GREEDY))
            return str(failure.value)

        *results, message = await asyncio.gather(*(running(p, n) for p, n in jobs), poisoned())
        assert "out of memory while prefilling" in message
        assert results == [reference(llama, p, n) for p, n in jobs]
        # the engine serves on
        assert await collect(e, GenerationRequest(*jobs[0][:1], 5, GREEDY)) == reference(
            llama, jobs[0][0], 5
        )
    finally:
        await e.stop()
