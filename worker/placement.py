"""Where a model's weights go: CPU, one GPU, or several GPUs under a per-GPU memory cap.

The plan is made on the meta device (no weights are read), with accelerate's
``infer_auto_device_map`` and the model's ``_no_split_modules``, so that a decoder layer is never
cut across two devices. Unlike FastChat, the ``--max-gpu-memory`` cap applies with one GPU too.
A model that does not fit under the caps raises :class:`InsufficientGpuMemory` unless CPU
offloading was asked for; nothing is ever offloaded to disk.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Share of each GPU's total memory the weights may use when ``--max-gpu-memory`` is not given;
#: the rest is left for activations and the KV cache of the running batch.
DEFAULT_GPU_MEMORY_FRACTION = 0.85

GIB = 2**30

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


class PlacementError(ValueError):
    """The requested placement cannot be made (bad device, too few GPUs, bad cap)."""


class InsufficientGpuMemory(PlacementError):
    """The weights do not fit under the per-GPU caps (and CPU offloading was not asked for)."""

    def __init__(self, message: str, *, model_bytes: int, gpu_caps: dict[int, int]) -> None:
        super().__init__(message)
        self.model_bytes = model_bytes
        self.gpu_caps = gpu_caps


@dataclass(frozen=True)
class Placement:
    """A placement plan.

    ``device_map`` is ``"cpu"`` or accelerate's module-name -> device dict (GPU indices, and
    ``"cpu"`` for offloaded modules); ``max_memory`` the per-device budget the plan was made
    under; ``planned_bytes`` the weight bytes the plan puts on each device.
    """

    device_map: dict[str, int | str] | str
    max_memory: dict[int | str, int]
    planned_bytes: dict[int | str, int] = field(default_factory=dict)
    summary: str = ""


def parse_memory(text: str | int) -> int:
    """Bytes in a memory size such as ``"20GiB"``, ``"20GB"``, ``"20Gi"``, ``"500MiB"``, ``"1024"``.

    Binary units (``Ki``, ``Mi``, ``Gi``, ``Ti``, with or without ``B``) are powers of 1024;
    decimal ones (``K``, ``M``, ``G``, ``T``, with or without ``B``) powers of 1000, as in
    Kubernetes quantities. Case does not matter. Raises ValueError for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _MEMORY_RE.match(str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"invalid memory size {text!r}: use a number of bytes or a number with a unit, "
                "e.g. 20GiB, 20Gi, 20GB or 500MiB"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"invalid memory size {text!r}: it must be more than 0 bytes")
    return size


def as_torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name (``float16``, ``bf16``, ``torch.float32``, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of float16, bfloat16, float32")
    return _DTYPES[name]


def format_bytes(size: float) -> str:
    """A size in GiB with one decimal (MiB below 1 GiB), e.g. ``"24.7 GiB"``."""
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    return f"{size / 2**20:.1f} MiB"


def plan_placement(
    model_or_config: nn.Module | Any,
    *,
    device: str,
    num_gpus: int,
    max_gpu_memory: str | None,
    dtype: torch.dtype | str,
    cpu_offloading: bool,
    gpu_memory_total: dict[int, int] | None = None,
    cpu_memory: int | None = None,
    trust_remote_code: bool = False,
) -> Placement:
    """Plan where the weights of a model go.

    ``model_or_config`` is a model (best on the meta device) or a transformers config, from
    which an empty meta model is built (``trust_remote_code`` for configs with their own code).
    ``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"``; with ``"cpu"`` or ``num_gpus == 0``
    everything goes to the CPU. Otherwise the first ``num_gpus`` GPUs are used, each capped at
    ``max_gpu_memory`` (default: ``DEFAULT_GPU_MEMORY_FRACTION`` of its total memory; a cap
    above a GPU's total is lowered to the total); with more than one GPU the layers are
    balanced over them. ``gpu_memory_total`` (GPU index ->
    bytes) replaces the visible GPUs' sizes, for planning on a machine without them;
    ``cpu_memory`` the RAM budget for offloading (default: the RAM available now).

    Raises :class:`InsufficientGpuMemory` when the weights do not fit under the caps and
    ``cpu_offloading`` is off, or do not fit GPUs plus RAM; :class:`PlacementError` for an
    unknown device, too few GPUs or an invalid cap.
    """
    torch_dtype = as_torch_dtype(dtype)
    if device not in ("cpu", "cuda", "auto"):
        raise PlacementError(f"unknown device {device!r}; choose one of auto, cpu, cuda")
    if num_gpus < 0:
        raise PlacementError(f"num_gpus must be 0 or more, not {num_gpus}")
    model = _as_meta_model(model_or_config, torch_dtype, trust_remote_code)
    sizes = _module_sizes(model, torch_dtype)
    if device == "cpu" or num_gpus == 0:
        return Placement(
            device_map="cpu",
            max_memory={},
            planned_bytes={"cpu": sizes[""]},
            summary=f"cpu: {format_bytes(sizes[''])} of weights in {_dtype_name(torch_dtype)}",
        )

    caps = _gpu_caps(num_gpus, max_gpu_memory, gpu_memory_total)
    max_memory: dict[int | str, int] = dict(caps)
    if cpu_offloading:
        max_memory["cpu"] = cpu_memory if cpu_memory is not None else _available_ram()
    device_map = _infer_device_map(model, max_memory, torch_dtype, simulated=gpu_memory_total)
    planned = _planned_bytes(device_map, sizes)

    left_over = {d: b for d, b in planned.items() if not isinstance(d, int)}
    if "disk" in left_over or (left_over and not cpu_offloading):
        raise InsufficientGpuMemory(
            _too_big_message(sizes[""], caps, max_gpu_memory, torch_dtype, planned, cpu_offloading),
            model_bytes=sizes[""],
            gpu_caps=caps,
        )
    return Placement(
        device_map=device_map,
        max_memory=max_memory,
        planned_bytes=planned,
        summary=_summary(device_map, planned, caps, sizes[""], torch_dtype),
    )


def describe_placement(model: nn.Module) -> str:
    """A one-line account of where a loaded model's weights are, per device."""
    per_device: dict[str, int] = {}
    dtypes = set()
    for tensor in _tensors(model):
        key = str(tensor.device)
        per_device[key] = per_device.get(key, 0) + tensor.numel() * tensor.element_size()
        if tensor.is_floating_point():
            dtypes.add(_dtype_name(tensor.dtype))
    parts = [f"{dev} {format_bytes(size)}" for dev, size in sorted(per_device.items())]
    return f"{', '.join(parts)} of weights in {'/'.join(sorted(dtypes)) or 'unknown dtype'}"


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    seen: set[int] = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor


def _as_meta_model(model_or_config: Any, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if not isinstance(model_or_config, PretrainedConfig):
        raise TypeError(
            f"plan_placement needs a torch model or a transformers config, "
            f"not {type(model_or_config).__name__}"
        )
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(
            model_or_config, dtype=dtype, trust_remote_code=trust_remote_code
        )


def _module_sizes(model: nn.Module, dtype: torch.dtype) -> dict[str, int]:
    from accelerate.utils import compute_module_sizes

    return dict(compute_module_sizes(model, dtype=dtype))


def _gpu_caps(
    num_gpus: int, max_gpu_memory: str | None, gpu_memory_total: dict[int, int] | None
) -> dict[int, int]:
    totals = gpu_memory_total if gpu_memory_total is not None else _visible_gpu_memory()
    missing = [i for i in range(num_gpus) if i not in totals]
    if missing:
        raise PlacementError(
            f"{num_gpus} GPU(s) asked for but only {len(totals)} visible "
            f"(GPU indices {sorted(totals)}); lower --num-gpus or give the pod more GPUs"
        )
    try:
        cap = parse_memory(max_gpu_memory) if max_gpu_memory is not None else None
    except ValueError as err:
        raise PlacementError(f"--max-gpu-memory: {err}") from err
    return {
        i: min(cap, totals[i]) if cap is not None else int(totals[i] * DEFAULT_GPU_MEMORY_FRACTION)
        for i in range(num_gpus)
    }


def _visible_gpu_memory() -> dict[int, int]:
    if not torch.cuda.is_available():
        return {}
    count = torch.cuda.device_count()
    return {i: torch.cuda.get_device_properties(i).total_memory for i in range(count)}


def _available_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


@contextlib.contextmanager
def _quiet_accelerate(enabled: bool) -> Iterator[None]:
    # Planning for GPUs this machine does not have makes accelerate warn about each of them.
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _infer_device_map(
    model: nn.Module,
    max_memory: dict[int | str, int],
    dtype: torch.dtype,
    simulated: dict[int, int] | None,
) -> dict[str, int | str]:
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    budget = dict(max_memory)
    with _quiet_accelerate(simulated is not None):
        if sum(isinstance(d, int) for d in budget) > 1:
            # Balanced budgets leave the same headroom on every GPU instead of filling GPU 0 first.
            budget = get_balanced_memory(
                model, max_memory=dict(budget), no_split_module_classes=no_split, dtype=dtype
            )
        device_map = infer_auto_device_map(
            model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype
        )
    return dict(device_map)


def _planned_bytes(device_map: dict[str, int | str], sizes: dict[str, int]) -> dict[int | str, int]:
    planned: dict[int | str, int] = {}
    for name, dev in device_map.items():
        planned[dev] = planned.get(dev, 0) + sizes.get(name, 0)
    return planned


def _too_big_message(
    model_bytes: int,
    caps: dict[int, int],
    max_gpu_memory: str | None,
    dtype: torch.dtype,
    planned: dict[int | str, int],
    cpu_offloading: bool,
) -> str:
    cap_text = (
        f"--max-gpu-memory {max_gpu_memory}"
        if max_gpu_memory
        else f"{DEFAULT_GPU_MEMORY_FRACTION:.0%} of each GPU"
    )
    on_gpus = sum(b for d, b in planned.items() if isinstance(d, int))
    message = (
        f"the model's weights need {format_bytes(model_bytes)} in {_dtype_name(dtype)} but "
        f"{len(caps)} GPU(s) capped at {format_bytes(max(caps.values()))} each ({cap_text}, "
        f"{format_bytes(sum(caps.values()))} in all) hold only {format_bytes(on_gpus)} of them "
        "(one layer's worth is kept free on GPU 0)"
    )
    if cpu_offloading:
        return message + "; the rest does not fit in the RAM left for CPU offloading either"
    return message + (
        "; add GPUs (--num-gpus), raise --max-gpu-memory, use a smaller dtype, "
        "or pass --cpu-offloading to keep the rest in RAM (slow)"
    )


def _summary(
    device_map: dict[str, int | str],
    planned: dict[int | str, int],
    caps: dict[int, int],
    model_bytes: int,
    dtype: torch.dtype,
) -> str:
    parts = []
    for dev in sorted(planned, key=lambda d: (not isinstance(d, int), str(d))):
        label = f"GPU {dev}" if isinstance(dev, int) else str(dev)
        cap = f" of {format_bytes(caps[dev])}" if isinstance(dev, int) else ""
        modules = _compact_names([n for n, d in device_map.items() if d == dev])
        parts.append(f"{label}: {format_bytes(planned[dev])}{cap} [{modules}]")
    return f"{format_bytes(model_bytes)} of weights in {_dtype_name(dtype)}; " + "; ".join(parts)


def _compact_names(names: list[str]) -> str:
    """``model.layers.0 .. model.layers.19`` becomes ``model.layers.0-19``."""
    out: list[str] = []
    runs: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        prefix, _, last = name.rpartition(".")
        if prefix and last.isdigit():
            if prefix not in runs:
                runs[prefix] = []
                order.append(prefix)
            runs[prefix].append(int(last))
        else:
            order.append(name)
    for item in order:
        if item in runs:
            numbers = runs[item]
            text = str(numbers[0]) if len(numbers) == 1 else f"{min(numbers)}-{max(numbers)}"
            out.append(f"{item}.{text}")
        else:
            out.append(item or "(whole model)")
    return ", ".join(out)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
