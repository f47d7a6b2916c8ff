"""GPU placement planned on the meta device: no weights and no GPU needed."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoModelForCausalLM, LlamaConfig

from kubechat.worker.placement import (
    DEFAULT_GPU_MEMORY_FRACTION,
    InsufficientGpuMemory,
    PlacementError,
    parse_memory,
    plan_placement,
)

GIB = 2**30


def meta_model(**sizes: int) -> torch.nn.Module:
    config = LlamaConfig(**sizes)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, dtype=torch.float16)


@pytest.fixture(scope="module")
def baichuan_13b() -> torch.nn.Module:
    """A Llama model of Baichuan-13B's sizes, on the meta device."""
    return meta_model(
        hidden_size=5120,
        num_hidden_layers=40,
        num_attention_heads=40,
        intermediate_size=13696,
        vocab_size=64000,
    )


@pytest.fixture(scope="module")
def llama_7b() -> torch.nn.Module:
    return meta_model(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
    )


def bytes_per_device(model: torch.nn.Module, device_map: dict) -> dict:
    """Weight bytes on each device, counted tensor by tensor from the device map."""

    def device_of(name: str):
        owners = [k for k in device_map if k == "" or name == k or name.startswith(k + ".")]
        assert owners, f"{name} is not placed anywhere"
        return device_map[max(owners, key=len)]

    totals: dict = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        device = device_of(name)
        totals[device] = totals.get(device, 0) + tensor.numel() * tensor.element_size()
    return totals


def layer_devices(device_map: dict, num_layers: int) -> list:
    found = []
    for i in range(num_layers):
        key = f"model.layers.{i}"
        found.append(device_map[key] if key in device_map else device_map.get("model"))
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20GiB", 20 * GIB),
        ("20Gi", 20 * GIB),
        ("20gib", 20 * GIB),
        ("20GB", 20 * 10**9),
        ("20G", 20 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5GiB", 3 * GIB // 2),
        ("1024", 1024),
        (" 7 GiB ", 7 * GIB),
        (4096, 4096),
    ],
)
def test_parse_memory_accepts_common_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "20 parsecs", "-5GiB", "0", "twenty", "20GiB!"])
def test_parse_memory_rejects_nonsense_with_a_clear_message(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_13b_float16_splits_across_two_20gib_gpus(baichuan_13b):
    plan = plan_placement(
        baichuan_13b,
        device="cuda",
        num_gpus=2,
        max_gpu_memory="20GiB",
        dtype=torch.float16,
        cpu_offloading=False,
        gpu_memory_total={0: 80 * GIB, 1: 80 * GIB},
    )
    per_device = bytes_per_device(baichuan_13b, plan.device_map)
    assert set(per_device) == {0, 1}, "nothing may go to cpu or disk"
    assert all(size <= 20 * GIB for size in per_device.values())
    assert set(layer_devices(plan.device_map, 40)) == {0, 1}
    assert plan.max_memory[0] == plan.max_memory[1] == 20 * GIB
    assert "GPU 0" in plan.summary and "GPU 1" in plan.summary


def test_13b_does_not_fit_one_20gib_gpu_without_offloading(baichuan_13b):
    with pytest.raises(InsufficientGpuMemory) as caught:
        plan_placement(
            baichuan_13b,
            device="cuda",
            num_gpus=1,
            max_gpu_memory="20GiB",
            dtype="float16",
            cpu_offloading=False,
            gpu_memory_total={0: 80 * GIB},
        )
    message = str(caught.value)
    assert "24.7 GiB" in message  # the model's float16 weights
    assert "20.0 GiB" in message  # the cap
    assert "--cpu-offloading" in message
    assert caught.value.gpu_caps == {0: 20 * GIB}


def test_13b_on_one_20gib_gpu_offloads_the_rest_to_cpu(baichuan_13b):
    plan = plan_placement(
        baichuan_13b,
        device="cuda",
        num_gpus=1,
        max_gpu_memory="20GiB",
        dtype="float16",
        cpu_offloading=True,
        gpu_memory_total={0: 80 * GIB},
        cpu_memory=64 * GIB,
    )
    per_device = bytes_per_device(baichuan_13b, plan.device_map)
    assert set(per_device) == {0, "cpu"}
    assert per_device[0] <= 20 * GIB
    assert per_device[0] + per_device["cpu"] == sum(per_device.values())


def test_cap_is_honoured_with_a_single_gpu(llama_7b):
    """FastChat ignored --max-gpu-memory on one GPU: a 7B model must not take the whole 80GiB."""
    plan = plan_placement(
        llama_7b,
        device="cuda",
        num_gpus=1,
        max_gpu_memory="10GiB",
        dtype="float16",
        cpu_offloading=True,
        gpu_memory_total={0: 80 * GIB},
        cpu_memory=64 * GIB,
    )
    per_device = bytes_per_device(llama_7b, plan.device_map)
    assert per_device[0] <= 10 * GIB
    assert per_device["cpu"] > 0
    with pytest.raises(InsufficientGpuMemory):
        plan_placement(
            llama_7b,
            device="cuda",
            num_gpus=1,
            max_gpu_memory="10GiB",
            dtype="float16",
            cpu_offloading=False,
            gpu_memory_total={0: 80 * GIB},
        )


def test_without_a_cap_a_share_of_each_gpu_is_used(llama_7b):
    plan = plan_placement(
        llama_7b,
        device="auto",
        num_gpus=1,
        max_gpu_memory=None,
        dtype="float16",
        cpu_offloading=False,
        gpu_memory_total={0: 80 * GIB},
    )
    assert plan.max_memory == {0: int(80 * GIB * DEFAULT_GPU_MEMORY_FRACTION)}
    assert set(bytes_per_device(llama_7b, plan.device_map)) == {0}


def test_cpu_placement_when_there_are_no_gpus(llama_7b):
    for device, gpus in (("cpu", 2), ("auto", 0)):
        plan = plan_placement(
            llama_7b,
            device=device,
            num_gpus=gpus,
            max_gpu_memory="10GiB",
            dtype="float32",
            cpu_offloading=False,
        )
        assert plan.device_map == "cpu"
        assert plan.planned_bytes["cpu"] > 12 * GIB  # 6.7B parameters
        assert plan.summary.startswith("cpu")


def test_plan_from_a_config_builds_the_meta_model_itself():
    config = LlamaConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        vocab_size=1000,
    )
    plan = plan_placement(
        config,
        device="cuda",
        num_gpus=2,
        max_gpu_memory="8MiB",
        dtype="bfloat16",
        cpu_offloading=False,
        gpu_memory_total={0: GIB, 1: GIB},
    )
    assert set(plan.planned_bytes) == {0, 1}
    assert all(size <= 8 * 2**20 for size in plan.planned_bytes.values())


def test_asking_for_more_gpus_than_exist_is_an_error(llama_7b):
    with pytest.raises(PlacementError, match="3 GPU"):
        plan_placement(
            llama_7b,
            device="cuda",
            num_gpus=3,
            max_gpu_memory="20GiB",
            dtype="float16",
            cpu_offloading=False,
            gpu_memory_total={0: 80 * GIB, 1: 80 * GIB},
        )


def test_bad_cap_and_bad_dtype_are_errors(llama_7b):
    with pytest.raises(PlacementError, match="max-gpu-memory"):
        plan_placement(
            llama_7b,
            device="cuda",
            num_gpus=1,
            max_gpu_memory="lots",
            dtype="float16",
            cpu_offloading=False,
            gpu_memory_total={0: 80 * GIB},
        )
    with pytest.raises(ValueError, match="dtype"):
        plan_placement(
            llama_7b,
            device="cpu",
            num_gpus=0,
            max_gpu_memory=None,
            dtype="float8",
            cpu_offloading=False,
        )
