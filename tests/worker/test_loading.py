"""Loading tiny checkpoints built here: safetensors, sharded .bin with index, remote code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PretrainedConfig

from kubechat.worker.loading import (
    DEFAULT_CONTEXT_LENGTH,
    LoadOptions,
    ModelLoadError,
    context_length,
    load_model,
)
from kubechat.worker.placement import plan_placement
from tests.worker.test_templates import build_tokenizer

GENERATION_CONFIG = {
    "temperature": 0.3,
    "top_p": 0.85,
    "top_k": 5,
    "repetition_penalty": 1.1,
    "max_new_tokens": 64,
    "do_sample": True,
    "eos_token_id": [2, 4],
    "bos_token_id": 1,
}
PROBE = torch.tensor([[1, 10, 20, 30, 40]])


def tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE).logits.float()


def write_tokenizer_and_generation_config(directory: Path) -> None:
    build_tokenizer().save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG))


@pytest.fixture(scope="session")
def reference_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config(len(build_tokenizer()))).eval()


@pytest.fixture(scope="session")
def safetensors_dir(tmp_path_factory, reference_model) -> Path:
    directory = tmp_path_factory.mktemp("tiny-safetensors")
    reference_model.save_pretrained(directory)
    write_tokenizer_and_generation_config(directory)
    return directory


@pytest.fixture(scope="session")
def sharded_bin_dir(tmp_path_factory, reference_model) -> Path:
    """The reference weights in bfloat16, as pytorch_model-0000N-of-0000M.bin plus an index."""
    directory = tmp_path_factory.mktemp("tiny-sharded-bin")
    state = {k: v.to(torch.bfloat16) for k, v in reference_model.state_dict().items()}
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({name: state[name].clone() for name in shard}, directory / filename)
        weight_map.update(dict.fromkeys(shard, filename))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    config = tiny_config(reference_model.config.vocab_size)
    config.dtype = torch.bfloat16
    config.save_pretrained(directory)
    write_tokenizer_and_generation_config(directory)
    return directory


@pytest.fixture(scope="session")
def remote_code_dir(tmp_path_factory, reference_model) -> Path:
    """A checkpoint laid out like Baichuan's: its own configuration and modeling code."""
    directory = tmp_path_factory.mktemp("tiny-remote-code")
    (directory / "configuration_tinychat.py").write_text(
        textwrap.dedent(
            """
            from transformers import LlamaConfig

            class TinyChatConfig(LlamaConfig):
                model_type = "tinychat"
            """
        )
    )
    (directory / "modeling_tinychat.py").write_text(
        textwrap.dedent(
            """
            from transformers import LlamaForCausalLM

            from .configuration_tinychat import TinyChatConfig

            class TinyChatForCausalLM(LlamaForCausalLM):
                config_class = TinyChatConfig
            """
        )
    )
    reference_model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="tinychat",
        architectures=["TinyChatForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tinychat.TinyChatConfig",
            "AutoModelForCausalLM": "modeling_tinychat.TinyChatForCausalLM",
        },
    )
    (directory / "config.json").write_text(json.dumps(config))
    write_tokenizer_and_generation_config(directory)
    return directory


def test_safetensors_on_cpu_defaults_to_float32(safetensors_dir, reference_model):
    loaded = load_model(LoadOptions(str(safetensors_dir)))
    assert loaded.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert torch.equal(logits(loaded.model), logits(reference_model))
    assert "cpu" in loaded.placement


def test_generation_defaults_eos_and_context_from_the_checkpoint(safetensors_dir):
    loaded = load_model(LoadOptions(str(safetensors_dir)))
    assert loaded.generation_defaults == {
        "temperature": 0.3,
        "top_p": 0.85,
        "top_k": 5,
        "repetition_penalty": 1.1,
        "max_new_tokens": 64,
        "do_sample": True,
    }
    assert loaded.eos_token_ids == {2, 4}
    assert loaded.context_length == 512
    assert loaded.tokenizer.encode("K2")[0] == loaded.tokenizer.bos_token_id


def test_without_generation_config_there_are_no_defaults(tmp_path, reference_model):
    reference_model.save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    loaded = load_model(LoadOptions(str(tmp_path)))
    assert loaded.generation_defaults == {}
    assert loaded.eos_token_ids == {2}


def test_explicit_dtype_is_honoured(safetensors_dir):
    loaded = load_model(LoadOptions(str(safetensors_dir), dtype="bfloat16"))
    assert loaded.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())


def test_sharded_bin_with_index(sharded_bin_dir, reference_model):
    assert not list(sharded_bin_dir.glob("*.safetensors"))
    assert len(list(sharded_bin_dir.glob("pytorch_model-*.bin"))) == 2
    loaded = load_model(LoadOptions(str(sharded_bin_dir)))
    # stored as bfloat16, loaded as float32 on the CPU: the same numbers, upcast
    assert loaded.dtype == torch.float32
    expected = LlamaForCausalLM(reference_model.config).eval()
    expected.load_state_dict(
        {k: v.to(torch.bfloat16).float() for k, v in reference_model.state_dict().items()}
    )
    assert torch.equal(logits(loaded.model), logits(expected))


def test_remote_code_is_refused_unless_trusted(remote_code_dir):
    with pytest.raises(ModelLoadError) as caught:
        load_model(LoadOptions(str(remote_code_dir)))
    message = str(caught.value)
    assert "ships its own model code" in message
    assert "auto_map" in message
    assert "--trust-remote-code" in message
    assert "trustRemoteCode: true" in message


def test_remote_code_loads_when_trusted(remote_code_dir, reference_model):
    loaded = load_model(LoadOptions(str(remote_code_dir), trust_remote_code=True))
    assert type(loaded.model).__name__ == "TinyChatForCausalLM"
    assert torch.equal(logits(loaded.model), logits(reference_model))


def test_remote_code_checkpoint_can_be_planned_over_gpus(remote_code_dir):
    """The GPU path builds the checkpoint's own model class on the meta device to plan it."""
    config = AutoConfig.from_pretrained(remote_code_dir, trust_remote_code=True)
    plan = plan_placement(
        config,
        device="cuda",
        num_gpus=2,
        max_gpu_memory="64KiB",
        dtype="float16",
        cpu_offloading=False,
        gpu_memory_total={0: 2**30, 1: 2**30},
        trust_remote_code=True,
    )
    assert set(plan.planned_bytes) == {0, 1}
    assert all(size <= 64 * 2**10 for size in plan.planned_bytes.values())


@pytest.mark.parametrize("path", ["/nonexistent/models/tiny", "./no-such-dir", "~/no-such-dir"])
def test_missing_path_is_a_clear_error(path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(LoadOptions(path))


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_model(LoadOptions(str(tmp_path)))


def test_unknown_dtype_lists_the_choices(safetensors_dir):
    with pytest.raises(ModelLoadError, match=r"float8.*auto, float16, bfloat16, float32"):
        load_model(LoadOptions(str(safetensors_dir), dtype="float8"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without GPUs")
def test_gpus_asked_for_but_none_visible(safetensors_dir):
    with pytest.raises(ModelLoadError, match=r"2 GPU.*0 CUDA GPU"):
        load_model(LoadOptions(str(safetensors_dir), device="cuda", num_gpus=2))


def test_context_length_falls_back_to_the_tokenizer_then_a_default():
    tokenizer = build_tokenizer()
    config = PretrainedConfig()
    tokenizer.model_max_length = 4096
    assert context_length(config, tokenizer) == 4096
    tokenizer.model_max_length = int(1e30)  # transformers' "no limit" sentinel
    assert context_length(config, tokenizer) == DEFAULT_CONTEXT_LENGTH
    config.seq_length = 8192
    assert context_length(config, tokenizer) == 8192
