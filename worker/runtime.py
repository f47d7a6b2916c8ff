"""Assembling a servable model: load weights and tokenizer, pick the prompt template and engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from kubechat.defaults import WORKER_LIMIT_CONCURRENCY
from kubechat.demo_model.cache import DEMO_MODEL_PATH, ensure_demo_model

from .batching_engine import BatchingEngine
from .embedding_model import Embedder, EmbeddingLayoutError, Pooling, embedding_layout
from .embedding_serving import EmbeddingRuntime
from .engine import Engine
from .loading import GGUF_SUFFIX, LoadedModel, LoadOptions, ModelLoadError, load_model
from .placement import parse_memory
from .serial_engine import SerialEngine
from .serving import ModelRuntime
from .templates import resolve_template

log = logging.getLogger(__name__)


@dataclass
class RuntimeOptions:
    """What the worker command decides about the model beyond loading it."""

    load: LoadOptions
    model_names: list[str]
    conv_template: str | None = None
    limit_concurrency: int = WORKER_LIMIT_CONCURRENCY
    engine: str = "auto"  # auto | batching | serial
    max_batch_tokens: int | None = None  # None: default_batch_tokens for the device
    kv_cache_bytes: int | None = None


def default_model_names(model_path: str) -> list[str]:
    """FastChat's default: the last component of the model path (``kubechat-demo`` for the demo),
    without the suffix of a GGUF file."""
    if model_path == DEMO_MODEL_PATH:
        return ["kubechat-demo"]
    name = Path(model_path.rstrip("/")).name
    return [name.removesuffix(GGUF_SUFFIX) or model_path]


def resolve_model_path(model_path: str) -> str:
    """The local directory or hub id to load; builds the demo model on first use."""
    if model_path != DEMO_MODEL_PATH:
        return model_path
    return str(ensure_demo_model(progress=True))


def make_engine(loaded: LoadedModel, options: RuntimeOptions) -> Engine:
    """The generation engine: continuous batching unless asked for serial (the batching engine
    itself falls back to serial for checkpoints it cannot batch, and says so when started)."""
    if options.engine == "serial":
        return SerialEngine(loaded.model, loaded.device, capacity=options.limit_concurrency)
    budget = kv_tokens(loaded.model.config, kv_budget_bytes(loaded, options), loaded.dtype)
    _warn_if_small(budget, loaded.context_length, options.limit_concurrency)
    return BatchingEngine(
        loaded.model,
        loaded.device,
        capacity=options.limit_concurrency,
        max_batch_tokens=options.max_batch_tokens or default_batch_tokens(loaded.device),
        kv_budget_tokens=budget,
    )


def default_batch_tokens(device: torch.device) -> int:
    """Prompt tokens prefilled per step unless ``--max-batch-tokens`` says otherwise.

    On a CPU a forward pass costs about in proportion to its tokens, so a bigger prefill step
    only holds up the running streams' next token and the rest of a burst's first tokens (at 32
    concurrent chat requests on the benchmark model: TTFT p50 about 0.25 s with 128 against 0.35 s
    with 256, same throughput). A GPU prefills a few thousand tokens in about the time of a few
    hundred, so there bigger steps are nearly free.
    """
    return 2048 if device.type == "cuda" else 128


def kv_budget_bytes(loaded: LoadedModel, options: RuntimeOptions) -> int | None:
    """Bytes the batch's KV cache may take: ``--kv-cache-memory`` when given; on GPUs what the
    ``--max-gpu-memory`` caps leave after the weights (less a tenth for activations), or without
    caps what the GPUs have free once the weights are on them (less a tenth of their size); on
    CPU None (the batch size bounds it)."""
    if options.kv_cache_bytes is not None:
        return options.kv_cache_bytes
    if loaded.device.type != "cuda":
        return None
    load = options.load
    gpus = max(1, load.num_gpus)
    if load.max_gpu_memory:
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        return gpu_kv_budget(parse_memory(load.max_gpu_memory) * gpus, weights)
    return free_gpu_kv_budget([torch.cuda.mem_get_info(i) for i in range(gpus)])


def gpu_kv_budget(gpu_bytes: int, weight_bytes: int) -> int:
    """What GPU memory caps leave for the KV cache after the weights and 10 % for activations."""
    return max(0, int(gpu_bytes * 0.9) - weight_bytes)


def free_gpu_kv_budget(free_and_total: list[tuple[int, int]]) -> int:
    """What GPUs with the weights already loaded leave for the KV cache: their free bytes, less
    a tenth of each one's size kept for activations and other processes (``(free, total)`` per
    GPU, as ``torch.cuda.mem_get_info`` reports them)."""
    return sum(max(0, free - total // 10) for free, total in free_and_total)


def kv_tokens(config: object, budget: int | None, dtype: torch.dtype) -> int | None:
    """Cache positions (summed over the batch's rows) that fit in ``budget`` bytes (None: no
    bound but the batch size). Per token each layer keeps one key and one value vector per KV
    head."""
    if budget is None:
        return None
    layers = getattr(config, "num_hidden_layers", 1)
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_token = 2 * layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()
    return max(1, budget // per_token)


def _warn_if_small(budget: int | None, context_length: int, capacity: int) -> None:
    """Say so when the KV budget cannot hold what the concurrency limit admits: requests then
    wait for room (or run one at a time) instead of batching."""
    if budget is None:
        return
    if budget < context_length:
        log.warning(
            "KV cache budget of %d tokens is less than one full-length sequence (%d tokens): "
            "long requests run one at a time; give more --max-gpu-memory or --kv-cache-memory",
            budget,
            context_length,
        )
    else:
        log.info(
            "KV cache budget: %d tokens (%d full-length sequences; --limit-worker-concurrency %d)",
            budget,
            budget // context_length,
            capacity,
        )


def build_runtime(options: RuntimeOptions) -> ModelRuntime | EmbeddingRuntime:
    """Load the model and wrap it for serving (runs off the event loop): an embedding runtime
    for a checkpoint in sentence-transformers' layout, else a generation runtime."""
    load = options.load
    load.model_path = resolve_model_path(load.model_path)
    try:
        pooling = embedding_layout(load.model_path) if Path(load.model_path).is_dir() else None
    except (EmbeddingLayoutError, OSError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from exc
    if pooling is not None:
        return build_embedding_runtime(options, pooling)
    loaded = load_model(load)
    template = resolve_template(
        options.conv_template, loaded.tokenizer, loaded.generation_config, model=loaded.model
    )
    log.info("prompt template: %r; placement: %s", template, loaded.placement)
    return ModelRuntime(
        names=options.model_names,
        tokenizer=loaded.tokenizer,
        template=template,
        engine=make_engine(loaded, options),
        context_length=loaded.context_length,
        eos_token_ids=set(loaded.eos_token_ids),
        defaults=dict(loaded.generation_defaults),
    )


def build_embedding_runtime(options: RuntimeOptions, pooling: Pooling) -> EmbeddingRuntime:
    """Load a sentence-transformers checkpoint (its transformer, without a head) for
    ``/v1/embeddings``; ``pooling`` is what :func:`embedding_layout` read from it."""
    loaded = load_model(options.load, auto_class="AutoModel")
    limit = loaded.context_length
    if pooling.max_tokens:
        limit = min(limit, pooling.max_tokens)
    log.info("embedding model: %s; placement: %s", pooling, loaded.placement)
    pad = loaded.tokenizer.pad_token_id
    return EmbeddingRuntime(
        names=options.model_names,
        tokenizer=loaded.tokenizer,
        engine=Embedder(
            loaded.model,
            loaded.device,
            pooling,
            pad_token_id=pad if pad is not None else 0,
            capacity=options.limit_concurrency,
        ),
        context_length=limit,
    )
