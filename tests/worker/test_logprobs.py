"""Logprobs from the engines: generated tokens' and prompts' log-probabilities equal a plain
forward pass of the model over the same tokens (log-softmax of the raw logits, whatever the
sampling parameters), while the requests decode together in one batch; prompt scoring
(``max_new_tokens`` 0) runs inside the batch without disturbing the others' output."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import LlamaForCausalLM

from kubechat.worker.batching_engine import BatchingEngine
from kubechat.worker.engine import GenerationRequest, SamplingParams, Step
from kubechat.worker.serial_engine import SerialEngine
from tests.support.checkpoints import tiny_llama

GREEDY = SamplingParams(do_sample=False)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="module", params=["batching", "serial"])
def engine(request, llama):
    e = (
        BatchingEngine(llama, "cpu", capacity=32, max_batch_tokens=32)
        if request.param == "batching"
        else SerialEngine(llama, "cpu", capacity=32)
    )
    asyncio.run(e.start())
    yield e
    asyncio.run(e.stop())


def prompts(n: int) -> list[list[int]]:
    return [[1] + [(11 * i + 3 * j) % 900 + 7 for j in range(4 + (i * 7) % 40)] for i in range(n)]


def forward_logprobs(model, tokens: list[int]) -> torch.Tensor:
    """log-softmax of the model's logits at every position of ``tokens``, run alone."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().log_softmax(-1)


async def steps(engine, request: GenerationRequest) -> list[Step]:
    return [s async for s in engine.generate(request)]


async def test_generated_tokens_logprobs_match_the_model_alone(engine, llama) -> None:
    requests = [
        GenerationRequest(p, 12, GREEDY, logprobs=3)
        if i % 2 == 0
        else GenerationRequest(p, 12, SamplingParams(temperature=0.5, top_k=5, seed=i), logprobs=0)
        for i, p in enumerate(prompts(10))
    ]
    results = await asyncio.gather(*(steps(engine, r) for r in requests))
    for request, got in zip(requests, results, strict=True):
        tokens = [s.token_id for s in got if s.token_id is not None]
        assert len(tokens) == 12
        table = forward_logprobs(llama, request.prompt_ids + tokens)
        for k, step in enumerate(got):
            row = table[len(request.prompt_ids) - 1 + k]
            assert step.logprob is not None and step.logprob.token_id == step.token_id
            # the raw model's log-softmax: neither temperature nor top-k changes it
            assert step.logprob.logprob == pytest.approx(float(row[step.token_id]), abs=TOLERANCE)
            assert len(step.logprob.top) == request.logprobs
            if request.logprobs:
                best = row.topk(request.logprobs)
                assert [t for t, _ in step.logprob.top] == best.indices.tolist()
                assert [v for _, v in step.logprob.top] == pytest.approx(
                    best.values.tolist(), abs=TOLERANCE
                )
                assert step.logprob.top[0][0] == step.token_id  # greedy picks the best


async def test_prompt_scoring_inside_a_busy_batch(engine, llama) -> None:
    """Prompt logprobs (``max_new_tokens`` 0, as lm-eval's loglikelihood asks through echo)
    of prompts longer than a prefill chunk, while greedy requests decode alongside."""
    busy = [GenerationRequest(p, 20, GREEDY) for p in prompts(6)]
    scored = [
        GenerationRequest([1] + [(5 * j + i) % 990 + 3 for j in range(n)], 0, prompt_logprobs=2)
        for i, n in enumerate((3, 45, 90))
    ]
    alone = [(await steps(engine, GenerationRequest(b.prompt_ids, 20, GREEDY))) for b in busy]
    results = await asyncio.gather(*(steps(engine, r) for r in busy + scored))
    for expected, got in zip(alone, results[: len(busy)], strict=True):
        assert [s.token_id for s in got] == [s.token_id for s in expected]
    for request, got in zip(scored, results[len(busy) :], strict=True):
        assert [(s.token_id, s.finish_reason) for s in got] == [(None, "length")]
        lps = got[0].prompt_logprobs
        prompt = request.prompt_ids
        assert lps is not None and len(lps) == len(prompt) and lps[0] is None
        table = forward_logprobs(llama, prompt)
        for t in range(1, len(prompt)):
            assert lps[t].token_id == prompt[t]
            assert lps[t].logprob == pytest.approx(float(table[t - 1, prompt[t]]), abs=TOLERANCE)
            assert [i for i, _ in lps[t].top] == table[t - 1].topk(2).indices.tolist()


async def test_echo_scoring_with_one_generated_token(engine, llama) -> None:
    """What lm-eval's local-completions sends: prompt logprobs and one generated token."""
    prompt = prompts(3)[2]
    got = await steps(engine, GenerationRequest(prompt, 1, GREEDY, logprobs=1, prompt_logprobs=1))
    assert len(got) == 1 and got[0].token_id is not None and got[0].finish_reason == "length"
    table = forward_logprobs(llama, prompt)
    assert got[0].prompt_logprobs[0] is None
    assert [lp.logprob for lp in got[0].prompt_logprobs[1:]] == pytest.approx(
        [float(table[t - 1, prompt[t]]) for t in range(1, len(prompt))], abs=TOLERANCE
    )
    assert got[0].token_id == int(table[-1].argmax())
    assert got[0].logprob.logprob == pytest.approx(float(table[-1].max()), abs=TOLERANCE)


async def test_no_logprobs_unless_asked(engine) -> None:
    got = await steps(engine, GenerationRequest(prompts(1)[0], 4, GREEDY))
    assert all(s.logprob is None and s.prompt_logprobs is None for s in got)
