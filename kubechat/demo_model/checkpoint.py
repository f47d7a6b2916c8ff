"""Write a model directory in Baichuan-13B-Chat's layout.

``config.json`` (with ``auto_map``), the remote code files, ``tokenizer.model``,
``tokenizer_config.json``, ``special_tokens_map.json``, ``generation_config.json`` and the
weights as ``pytorch_model-0000N-of-0000M.bin`` shards with ``pytorch_model.bin.index.json``.
transformers 5 only saves safetensors, so the ``.bin`` shards and their index are written here
with ``torch.save``.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import torch
from transformers import GenerationConfig

from .remote_code import REMOTE_CODE_FILES
from .remote_code.configuration_kubechat_demo import KubechatDemoConfig
from .remote_code.tokenization_kubechat_demo import KubechatDemoTokenizer

WEIGHTS_INDEX = "pytorch_model.bin.index.json"
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_kubechat_demo.KubechatDemoConfig",
    "AutoModel": "modeling_kubechat_demo.KubechatDemoModel",
    "AutoModelForCausalLM": "modeling_kubechat_demo.KubechatDemoForCausalLM",
    "AutoTokenizer": ["tokenization_kubechat_demo.KubechatDemoTokenizer", None],
}
ARCHITECTURE = "KubechatDemoForCausalLM"


def shard_file_name(index: int, count: int) -> str:
    """``pytorch_model-0000<index>-of-0000<count>.bin`` (1-based index)."""
    return f"pytorch_model-{index:05d}-of-{count:05d}.bin"


def save_sharded_bin(
    state_dict: dict[str, torch.Tensor], out_dir: Path, *, shards: int = 2
) -> list[str]:
    """Save ``state_dict`` as ``shards`` ``.bin`` files of similar size plus their index.

    Tensors keep their order; each shard is filled up to an equal share of the total bytes.
    Returns the names of the files written (shards, then the index).
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    names = list(state_dict)
    sizes = [state_dict[n].numel() * state_dict[n].element_size() for n in names]
    total = sum(sizes)
    groups: list[list[str]] = [[] for _ in range(shards)]
    filled = 0
    for name, size in zip(names, sizes, strict=True):
        # place each tensor in the shard its midpoint falls into, so shards stay balanced
        slot = min(int((filled + size / 2) * shards / total), shards - 1) if total else 0
        groups[slot].append(name)
        filled += size
    if any(not g for g in groups):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} non-empty shards")
    weight_map: dict[str, str] = {}
    written = []
    for i, group in enumerate(groups, start=1):
        file_name = shard_file_name(i, shards)
        tensors = {n: state_dict[n].detach().contiguous().clone() for n in group}
        torch.save(tensors, out_dir / file_name)
        weight_map.update(dict.fromkeys(group, file_name))
        written.append(file_name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_json(out_dir / WEIGHTS_INDEX, index)
    return [*written, WEIGHTS_INDEX]


def save_config(config: KubechatDemoConfig, out_dir: Path) -> list[str]:
    """Write ``config.json`` pointing ``auto_map`` at the copied remote code."""
    config.architectures = [ARCHITECTURE]
    config.auto_map = CONFIG_AUTO_MAP
    config.save_pretrained(out_dir)
    return ["config.json"]


def demo_generation_config(
    *, user_token_id: int, assistant_token_id: int, pad_token_id: int = 0
) -> GenerationConfig:
    """The demo model's generation config: role token ids and Baichuan-like sampling defaults."""
    return GenerationConfig(
        user_token_id=user_token_id,
        assistant_token_id=assistant_token_id,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=pad_token_id,
        max_new_tokens=64,
        do_sample=True,
        temperature=0.3,
        top_p=0.85,
        top_k=5,
        repetition_penalty=1.1,
    )


def save_generation_config(generation_config: GenerationConfig, out_dir: Path) -> list[str]:
    """Write ``generation_config.json``."""
    generation_config.save_pretrained(out_dir)
    return ["generation_config.json"]


def save_tokenizer_files(
    tokenizer: KubechatDemoTokenizer, out_dir: Path, *, model_max_length: int
) -> list[str]:
    """Write ``tokenizer.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    The JSON files are written here rather than by ``save_pretrained`` because transformers 5
    drops ``add_bos_token``/``add_eos_token`` and no longer writes ``special_tokens_map.json``.
    """
    tokenizer.save_vocabulary(str(out_dir))
    write_json(
        out_dir / "tokenizer_config.json",
        {
            "add_bos_token": tokenizer.add_bos_token,
            "add_eos_token": tokenizer.add_eos_token,
            "auto_map": {"AutoTokenizer": CONFIG_AUTO_MAP["AutoTokenizer"]},
            "bos_token": tokenizer.bos_token,
            "clean_up_tokenization_spaces": False,
            "eos_token": tokenizer.eos_token,
            "model_max_length": model_max_length,
            "pad_token": tokenizer.pad_token,
            "padding_side": "left",
            "sp_model_kwargs": {},
            "tokenizer_class": type(tokenizer).__name__,
            "unk_token": tokenizer.unk_token,
            "user_token": tokenizer.user_token,
            "assistant_token": tokenizer.assistant_token,
        },
    )
    write_json(
        out_dir / "special_tokens_map.json",
        {
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "unk_token": tokenizer.unk_token,
            "pad_token": tokenizer.pad_token,
            "additional_special_tokens": [tokenizer.user_token, tokenizer.assistant_token],
        },
    )
    return ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


def copy_remote_code(out_dir: Path) -> list[str]:
    """Copy the configuration/modeling/tokenization modules the ``auto_map`` names."""
    package = resources.files(__package__).joinpath("remote_code")
    for name in REMOTE_CODE_FILES:
        with resources.as_file(package.joinpath(name)) as source:
            shutil.copyfile(source, out_dir / name)
    return list(REMOTE_CODE_FILES)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept readable)."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
