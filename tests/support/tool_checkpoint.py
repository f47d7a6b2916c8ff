"""A tiny Qwen2-layout checkpoint whose chat template renders tools, in the style of Qwen2.5's.

Built locally (random weights, seed 0): a byte-level BPE ``tokenizer.json`` trained on the
standard library's sources with ChatML's special tokens and ``<tool_call>``/``</tool_call>`` as
added tokens (Qwen2.5 adds them the same way), a Qwen2ForCausalLM small enough for tests, and a
ChatML ``chat_template`` written here that does what Qwen2.5's does with tools: lists them as JSON
inside ``<tools></tools>`` in the system turn with instructions to answer
``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, renders an assistant's ``tool_calls``
that way, and wraps ``role: tool`` results in ``<tool_response>`` inside a user turn.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM

NAME = "qwen2.5-tools-tiny"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TAGS = ["<tool_call>", "</tool_call>"]

TOOLS_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}
{{- 'You can call these functions, listed in <tools></tools>:\n<tools>' }}
{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
{{- '\n</tools>\n\nTo call one, answer with its name and arguments as JSON inside '
    + '<tool_call></tool_call>:\n<tool_call>\n{"name": <name>, "arguments": <object>}\n'
    + '</tool_call><|im_end|>\n' }}
{%- elif messages[0].role != 'system' %}
{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- if not (loop.first and tools) %}
{{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' }}
{%- endif %}
{%- elif message.role == 'user' %}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}
{%- set fn = call.function if call.function is defined else call %}
{%- set args = fn.arguments if fn.arguments is string else (fn.arguments | tojson) %}
{{- '\n<tool_call>\n{"name": "' + fn.name + '", "arguments": ' + args + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
""".strip()

_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _training_text(limit_bytes: int = 300_000) -> list[str]:
    lines: list[str] = []
    size = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            if line.strip():
                lines.append(line)
                size += len(line)
        if size > limit_bytes:
            break
    return lines


def build_tool_checkpoint(parent: Path) -> Path:
    """Write the checkpoint under ``parent`` and return its directory."""
    directory = parent / NAME
    directory.mkdir(parents=True)
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(_training_text(), trainer)
    backend.add_special_tokens(SPECIAL)
    backend.add_tokens(TOOL_TAGS)
    backend.save(str(directory / "tokenizer.json"))
    endoftext, _, im_end = (backend.token_to_id(t) for t in SPECIAL)
    _write(
        directory / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": None,
            "chat_template": TOOLS_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 4096,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=-(-backend.get_vocab_size() // 128) * 128,
        max_position_embeddings=4096,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        tie_word_embeddings=False,
        **_TINY,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory)
    _write(
        directory / "generation_config.json",
        {
            "bos_token_id": endoftext,
            "pad_token_id": endoftext,
            "eos_token_id": [im_end, endoftext],
            "do_sample": True,
            "temperature": 0.7,
            "top_p": 0.8,
        },
    )
    return directory


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
