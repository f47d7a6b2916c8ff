"""Choosing the next token from logits, per request: penalties, temperature, top-k, top-p, seed.

Works on a batch of rows with each row's own parameters, so a one-at-a-time engine and a batching
engine pick tokens the same way. The processing order matches Hugging Face ``generate`` (repetition
penalty, then temperature, top-k, top-p), so greedy output equals HF's token for token.
"""

from __future__ import annotations

import torch

from .engine import SamplingParams


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
