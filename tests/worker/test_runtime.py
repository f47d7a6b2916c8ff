"""The KV cache budget the batching engine gets: from the flag, the GPU caps, or free GPU memory."""

from __future__ import annotations

import logging

import torch
from transformers import LlamaConfig

from kubechat.worker import runtime

GiB = 1024**3


def baichuan_13b_like() -> LlamaConfig:
    """Baichuan-13B's attention sizes: 40 layers, 40 heads of 128."""
    return LlamaConfig(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40)


def test_caps_leave_what_the_weights_do_not_take() -> None:
    # 2 x 20 GiB caps, 26 GiB of float16 weights: 36 GiB usable, 10 GiB for the cache
    assert runtime.gpu_kv_budget(40 * GiB, 26 * GiB) == 10 * GiB
    assert runtime.gpu_kv_budget(20 * GiB, 26 * GiB) == 0


def test_without_caps_the_free_memory_less_a_tenth_of_each_gpu() -> None:
    free_and_total = [(30 * GiB, 80 * GiB), (5 * GiB, 80 * GiB)]
    assert runtime.free_gpu_kv_budget(free_and_total) == 22 * GiB


def test_tokens_per_budget_follow_the_model_sizes() -> None:
    # per token: 2 (key, value) x 40 layers x 5120 x 2 bytes = 800 KiB; 10 GiB hold 13107 tokens
    assert runtime.kv_tokens(baichuan_13b_like(), 10 * GiB, torch.float16) == 13107
    assert runtime.kv_tokens(baichuan_13b_like(), None, torch.float16) is None
    gqa = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8)  # fmt: skip
    assert runtime.kv_tokens(gqa, GiB, torch.float16) == GiB // (2 * 32 * 8 * 128 * 2)


def test_a_budget_below_one_sequence_is_reported(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=runtime.log.name):
        runtime._warn_if_small(1000, 4096, 8)
        runtime._warn_if_small(40960, 4096, 8)
        runtime._warn_if_small(None, 4096, 8)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "less than one full-length sequence" in messages[0]
    assert caplog.records[0].levelno == logging.WARNING
    assert "10 full-length sequences" in messages[1]


def test_prefill_steps_are_small_on_cpu_and_large_on_gpus() -> None:
    assert runtime.default_batch_tokens(torch.device("cpu")) == 128
    assert runtime.default_batch_tokens(torch.device("cuda", 0)) == 2048
