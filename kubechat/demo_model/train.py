"""Teach a freshly initialised demo model to answer the dialogue set, on CPU, seeded.

Every sample is a chat prompt, as the model's shipped ``build_chat_input`` builds it, followed by
the reference answer and ``</s>``; the loss covers only the answer and ``</s>``. Half of each
batch are second turns (the question asked after another Q/A pair), so answers do not depend on
being the first message.

Greedy decoding reproduces an answer exactly when, with the reference prefix fed in, the most
likely next token is the reference token at every answer position. That needs one forward pass
per evaluation, so training checks it often and stops as soon as the target is met.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .dialogues import Dialogues
from .remote_code.generation_utils import build_chat_input
from .remote_code.modeling_kubechat_demo import KubechatDemoForCausalLM

IGNORE = -100


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights (part of the build fingerprint)."""

    seed: int = 20230711
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    batch_size: int = 64
    max_steps: int = 600
    eval_every: int = 20
    # variants of each pair asked as a second turn, in the training pool / in the evaluation
    train_second_turns_per_pair: int = 6
    eval_second_turns_per_pair: int = 1
    # fraction of evaluation samples (first and second turns) that must be answered right ...
    target_accuracy: float = 1.0
    # ... with at least this probability on every answer token, so sampling at a low temperature
    # (generation_config.json's defaults) gives the same answers
    min_token_probability: float = 0.9


@dataclass(frozen=True)
class Sample:
    """One encoded chat sample: prompt + answer + eos, labels only on answer + eos."""

    messages: tuple[dict[str, str], ...]
    answer: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass
class TrainResult:
    """What training did: steps taken, time, final loss and per-sample greedy correctness."""

    steps: int
    seconds: float
    loss: float
    first_turn_right: int
    first_turn_total: int
    second_turn_right: int
    second_turn_total: int
    reached_target: bool


def encode_sample(
    model: KubechatDemoForCausalLM,
    tokenizer,
    messages: Sequence[dict[str, str]],
    answer: str,
) -> Sample:
    """Encode one conversation whose reply should be ``answer`` (the prompt as ``model.chat()``
    builds it: role ids from ``model.generation_config``)."""
    prompt = build_chat_input(model, tokenizer, list(messages))[0].tolist()
    reply = [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.eos_token_id]
    return Sample(
        messages=tuple(messages),
        answer=answer,
        input_ids=tuple(prompt + reply),
        labels=tuple([IGNORE] * len(prompt) + reply),
    )


def collate(samples: Sequence[Sample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(s.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def answer_scores(
    model: KubechatDemoForCausalLM, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (would greedy decoding reproduce its labelled answer exactly, eos included;
    the lowest probability the model gives to a reference token of that answer)."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits[:, :-1]
    target = batch["labels"][:, 1:]
    scored = target != IGNORE
    greedy = ((logits.argmax(-1) == target) | ~scored).all(dim=1)
    probs = logits.softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    lowest = probs.masked_fill(~scored, 1.0).min(dim=1).values
    return greedy, lowest


def train_chat_model(
    model: KubechatDemoForCausalLM,
    tokenizer,
    dialogues: Dialogues,
    settings: TrainSettings = TrainSettings(),
    *,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place until greedy answers reach ``settings.target_accuracy``.

    ``model.generation_config`` must carry the role token ids the prompts are built with.

    Uses at most two CPU threads (restored afterwards) and stops at ``settings.max_steps``
    whether or not the target was reached; the caller decides whether the result is good enough.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        return _train(model, tokenizer, dialogues, settings, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model, tokenizer, dialogues, settings, progress):
    started = time.monotonic()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)

    def encode_all(conversations):
        return [
            encode_sample(model, tokenizer, messages, dialogues.answer_to(messages[-1]["content"]))
            for messages in conversations
        ]

    n_pairs = len(dialogues.pairs)
    pool = encode_all(
        dialogues.conversations(
            second_turns=n_pairs * settings.train_second_turns_per_pair,
            seed=settings.seed,
            after_seed=True,
        )
    )
    first_pool, second_pool = pool[:n_pairs], pool[n_pairs:]
    evaluation = encode_all(
        dialogues.conversations(
            second_turns=n_pairs * settings.eval_second_turns_per_pair,
            seed=settings.seed + 1,
            after_seed=True,
        )
    )
    eval_batch = collate(evaluation, tokenizer.pad_token_id)
    n_first = n_pairs

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.98), weight_decay=0.0
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / settings.warmup_steps)
    )

    def evaluate() -> tuple[torch.Tensor, bool]:
        model.eval()
        right, lowest = answer_scores(model, eval_batch)
        model.train()
        learned = right & (lowest >= settings.min_token_probability)
        return right, learned.float().mean().item() >= settings.target_accuracy

    bar = tqdm(
        total=settings.max_steps,
        desc="training demo model",
        unit="step",
        disable=not progress,
        leave=False,
    )
    loss_value = float("nan")
    right = torch.zeros(len(evaluation), dtype=torch.bool)
    done = False
    step = 0
    model.train()
    try:
        while step < settings.max_steps:
            half = settings.batch_size // 2
            chosen = rng.choices(first_pool, k=half) + rng.sample(
                second_pool, settings.batch_size - half
            )
            batch = collate(chosen, tokenizer.pad_token_id)
            loss = model(**batch, use_cache=False).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            bar.update(1)
            if step % settings.eval_every == 0:
                right, done = evaluate()
                bar.set_postfix(loss=f"{loss_value:.3f}", right=f"{int(right.sum())}/{len(right)}")
                if done:
                    break
        else:
            right, done = evaluate()
    finally:
        bar.close()
        model.eval()
    return TrainResult(
        steps=step,
        seconds=time.monotonic() - started,
        loss=loss_value,
        first_turn_right=int(right[:n_first].sum()),
        first_turn_total=n_first,
        second_turn_right=int(right[n_first:].sum()),
        second_turn_total=len(right) - n_first,
        reached_target=done,
    )
