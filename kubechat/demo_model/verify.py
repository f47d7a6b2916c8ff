"""Check a saved demo model the way a user loads it: through transformers' Auto classes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging


def load_saved(model_dir: Path):
    """(model, tokenizer) loaded from ``model_dir`` with ``trust_remote_code=True``.

    Raises ``ValueError`` if the weights files miss a parameter or hold an unexpected one.
    """
    with quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(
            str(model_dir), trust_remote_code=True, output_loading_info=True
        )
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if problems:
        raise ValueError(f"weights in {model_dir} do not match the model: {problems}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
    return model.eval(), tokenizer


@torch.no_grad()
def greedy_replies(
    model, tokenizer, conversations: Sequence[Sequence[dict[str, str]]], *, batch_size: int = 16
) -> list[str]:
    """Greedy replies to each conversation, generated in left-padded batches (prompts as the
    checkpoint's ``model.chat()`` builds them)."""
    gen = model.generation_config
    build_chat_input = shipped_chat_input_builder(model)
    replies: list[str] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [
            build_chat_input(model, tokenizer, list(c))[0].tolist()
            for c in conversations[start : start + batch_size]
        ]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[gen.pad_token_id] * (width - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=1.0,
            max_new_tokens=gen.max_new_tokens,
        )
        replies += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return replies


def shipped_chat_input_builder(model):
    """The ``build_chat_input`` the loaded checkpoint's own modeling code uses for ``chat()``
    (its copy of ``generation_utils.py``, imported by transformers with the remote code)."""
    return sys.modules[type(model).__module__].build_chat_input


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and warnings for the duration of the block."""
    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
