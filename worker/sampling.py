"""Choosing the next token from logits, per request: penalties, temperature, top-k, top-p, seed;
and the log-probabilities a request asks for, from the same logits before any of those.

Works on a batch of rows with each row's own parameters, so a one-at-a-time engine and a batching
engine pick tokens the same way. The processing order matches Hugging Face ``generate`` (repetition
penalty, then temperature, top-k, top-p), so greedy output equals HF's token for token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .engine import SamplingParams, TokenLogprob


def new_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator:
    """A random generator for one request: seeded when the request gives a seed."""
    gen = torch.Generator(device=device)
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    return gen


def apply_penalties(
    logits: torch.Tensor, params: SamplingParams, seen_ids: list[int], generated_ids: list[int]
) -> torch.Tensor:
    """Repetition penalty over prompt and output (HF semantics); presence/frequency over output."""
    if params.repetition_penalty != 1.0 and seen_ids:
        idx = torch.tensor(sorted(set(seen_ids)), device=logits.device)
        picked = logits.index_select(0, idx)
        picked = torch.where(
            picked < 0, picked * params.repetition_penalty, picked / params.repetition_penalty
        )
        logits = logits.index_copy(0, idx, picked)
    if (params.presence_penalty or params.frequency_penalty) and generated_ids:
        ids, counts = torch.tensor(generated_ids, device=logits.device).unique(return_counts=True)
        penalty = params.frequency_penalty * counts.to(logits.dtype) + params.presence_penalty
        logits = logits.index_add(0, ids, -penalty)
    return logits


def pick_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    seen_ids: list[int],
    generated_ids: list[int],
) -> int:
    """The next token id for one row of logits (shape ``[vocab]``)."""
    logits = apply_penalties(logits.float(), params, seen_ids, generated_ids)
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k and params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= (1 - params.top_p)
        drop_sorted[-1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprobs(
    logits: torch.Tensor, tokens: Sequence[int], tops: Sequence[int]
) -> list[TokenLogprob]:
    """For each row of ``logits`` (shape ``[rows, vocab]``): the log-probability of its token in
    ``tokens`` and of its ``tops[row]`` most likely tokens, from the log-softmax of the logits as
    the model gave them (OpenAI's logprobs: before penalties, temperature or top-k/top-p)."""
    logprobs = logits.float().log_softmax(dim=-1)
    index = torch.tensor(list(tokens), dtype=torch.long, device=logits.device).unsqueeze(1)
    chosen = logprobs.gather(1, index).squeeze(1).tolist()
    most = min(max(tops, default=0), logprobs.shape[-1])
    best_values: list[list[float]] = [[] for _ in chosen]
    best_ids: list[list[int]] = [[] for _ in chosen]
    if most > 0:
        values, ids = logprobs.topk(most, dim=-1)
        best_values, best_ids = values.tolist(), ids.tolist()
    return [
        TokenLogprob(
            token,
            chosen[row],
            tuple(zip(best_ids[row][: tops[row]], best_values[row][: tops[row]], strict=True)),
        )
        for row, token in enumerate(tokens)
    ]


def prompt_logprobs(
    logits: torch.Tensor, prompt_ids: Sequence[int], top: int
) -> tuple[TokenLogprob | None, ...]:
    """The logprobs of a prompt's tokens from the logits of every prompt position but the last
    (``[len(prompt_ids) - 1, vocab]``: position ``t`` predicts token ``t + 1``); the first token
    has None, as nothing predicts it."""
    rest = list(prompt_ids[1:])
    return (None, *token_logprobs(logits, rest, [top] * len(rest)))
