"""Loading a causal language model and its tokenizer the way ``kubechat worker`` serves them.

Any checkpoint ``AutoModelForCausalLM`` loads works: safetensors or sharded ``.bin`` with an
index, a local directory or a hub id (with ``revision``). Checkpoints that ship their own Python
code (``auto_map`` in config.json, like Baichuan-13B-Chat) load only with ``trust_remote_code``.
A GGUF file (llama.cpp's format: the path of a ``.gguf`` file, or of a directory without
config.json that holds exactly one) loads through transformers' ``gguf_file``: config, tokenizer
and chat template come from the file's metadata, and quantized weights are dequantized (to float32
on the CPU). A tokenizer whose vocabulary covers far fewer ids than the model's embedding has rows
is refused (:func:`check_vocabulary`).

Device and dtype choices:

* ``num_gpus == 0`` or ``device == "cpu"``: everything on the CPU. ``dtype="auto"`` then means
  float32, because half-precision matrix products on CPU are many times slower (and bfloat16
  is only fast on recent CPUs); ask for float16/bfloat16 explicitly to halve the RAM instead.
* GPUs: weights are spread over the first ``num_gpus`` GPUs under the per-GPU cap (see
  :mod:`kubechat.worker.placement`). ``dtype="auto"`` takes the checkpoint's float16/bfloat16
  and otherwise float16 (bfloat16 becomes float16 on GPUs without bfloat16 support).
  ``device == "cuda"`` with ``num_gpus == 0`` means one GPU, as FastChat's default.

Every failure a user can fix is a :class:`ModelLoadError` whose message says what to change.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kubechat.worker.placement import (
    InsufficientGpuMemory,
    PlacementError,
    as_torch_dtype,
    describe_placement,
    plan_placement,
)
from kubechat.worker.remote_code import REASON as REMOTE_REASON
from kubechat.worker.remote_code import (
    load_tokenizer_with_sp_model_first,
    remote_code_failure,
)

#: Sampling parameters taken from generation_config.json as request defaults.
GENERATION_DEFAULT_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "max_new_tokens",
    "do_sample",
)

#: Config attributes that give the context length, in order of preference.
CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "model_max_length", "n_positions", "seq_length")

#: Context length when neither the config nor the tokenizer names one (FastChat's default).
DEFAULT_CONTEXT_LENGTH = 2048

DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")
DEVICE_CHOICES = ("auto", "cpu", "cuda")

# Tokenizers without a limit report a huge sentinel (about 1e30) as model_max_length.
_SANE_CONTEXT_LIMIT = 10_000_000
GGUF_SUFFIX = ".gguf"
# What transformers raises for a checkpoint it cannot read (anything else is our own bug).
_LOAD_ERRORS = (OSError, ValueError, KeyError, ImportError, RuntimeError, TypeError)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(Exception):
    """A model could not be loaded; the message says why and what to change.

    ``reason`` is the condition reason the operator reports: ``ModelLoadFailed``,
    ``InsufficientGpuMemory`` or ``InvalidSpec``.
    """

    def __init__(self, message: str, reason: str = "ModelLoadFailed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class LoadOptions:
    """What to load and where: the worker's command-line flags."""

    model_path: str
    revision: str | None = None
    device: str = "auto"
    num_gpus: int = 0
    max_gpu_memory: str | None = None
    dtype: str = "auto"
    cpu_offloading: bool = False
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    """A model ready to generate, with what serving it needs to know."""

    model: Any
    tokenizer: Any
    generation_defaults: dict[str, Any]
    eos_token_ids: set[int]
    context_length: int
    device: torch.device
    placement: str
    dtype: torch.dtype
    generation_config: Any = None
    model_path: str = ""


def parse_dtype(text: str) -> torch.dtype | None:
    """The torch dtype a ``--dtype`` value names; None for ``auto``.

    Raises ModelLoadError (reason InvalidSpec) for an unknown name.
    """
    if text.lower() == "auto":
        return None
    try:
        return as_torch_dtype(text)
    except ValueError:
        raise ModelLoadError(
            f"unknown dtype {text!r}; choose one of {', '.join(DTYPE_CHOICES)}", "InvalidSpec"
        ) from None


def load_model(options: LoadOptions, *, auto_class: str = "AutoModelForCausalLM") -> LoadedModel:
    """Load the model and tokenizer ``options`` describe, in eval mode without gradients.
    ``auto_class`` is the transformers class that loads the weights (``AutoModel`` for an
    embedding model: its hidden states, no language-model head).

    Raises ModelLoadError for a missing path, a checkpoint needing ``trust_remote_code``, an
    unknown dtype or device, missing GPUs, weights that do not fit under the GPU caps, and
    failures of transformers while reading the checkpoint.
    """
    source, gguf_file = _check_source(options.model_path)
    wanted_dtype = parse_dtype(options.dtype)
    gpus = _gpu_count(options)
    # A GGUF file carries its config in its metadata, never remote code.
    if gguf_file is None:
        config_dict = _config_dict(source, options.revision)
        _check_remote_code(source, config_dict, options.trust_remote_code)
    files = {"revision": options.revision, "gguf_file": gguf_file}

    config = _call(
        "read the config of",
        source,
        lambda: _auto_config(source, files, options.trust_remote_code),
    )
    dtype = wanted_dtype or _auto_dtype(config, on_gpu=gpus > 0)
    load_kwargs: dict[str, Any] = {}
    if gpus > 0:
        try:
            plan = plan_placement(
                config,
                device="cuda",
                num_gpus=gpus,
                max_gpu_memory=options.max_gpu_memory,
                dtype=dtype,
                cpu_offloading=options.cpu_offloading,
                trust_remote_code=options.trust_remote_code,
            )
        except InsufficientGpuMemory as err:
            raise ModelLoadError(f"{source}: {err}", "InsufficientGpuMemory") from err
        except PlacementError as err:
            raise ModelLoadError(f"{source}: {err}", "InvalidSpec") from err
        load_kwargs["device_map"] = plan.device_map

    tokenizer = _call(
        "load the tokenizer of",
        source,
        lambda: _auto_tokenizer(source, files, options.trust_remote_code),
    )
    model = _call(
        "load the weights of",
        source,
        lambda: _auto_model(
            source, files, options.trust_remote_code, config, dtype, load_kwargs, auto_class
        ),
    )
    model.eval()
    model.requires_grad_(False)
    check_vocabulary(source, tokenizer, model.get_input_embeddings().weight.shape[0])

    generation_config = _generation_config(source, options.revision)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        generation_defaults=generation_defaults(generation_config),
        eos_token_ids=eos_token_ids(model.config, generation_config, tokenizer),
        context_length=context_length(model.config, tokenizer),
        device=model.get_input_embeddings().weight.device,
        placement=describe_placement(model),
        dtype=dtype,
        generation_config=generation_config,
        model_path=os.path.join(source, gguf_file) if gguf_file else source,
    )


def check_vocabulary(source: str, tokenizer: Any, embedding_rows: int) -> None:
    """Refuse a tokenizer that covers less than half of the model's embedding rows.

    Checkpoints pad their embedding a little past the vocabulary (Qwen2: 151,936 rows for
    151,665 tokens), never by half; a tokenizer that small did not read the checkpoint's
    vocabulary (a ``tokenizer.model`` built through a tokenizer class's constructor, say, gives
    3 tokens), and the model would answer nothing useful.
    """
    size = len(tokenizer)
    if size * 2 >= embedding_rows:
        return
    # One line, meaning first: the operator's condition keeps the end of the worker's last line.
    raise ModelLoadError(
        f"{source}: the tokenizer has {size} tokens but the model's embedding has "
        f"{embedding_rows} rows: it did not load this checkpoint's vocabulary (are "
        "tokenizer.json or tokenizer.model and tokenizer_config.json this model's? a "
        "tokenizer.model is read with the sentencepiece and protobuf packages)"
    )


def generation_defaults(generation_config: Any) -> dict[str, Any]:
    """The sampling parameters generation_config.json sets (only those it sets)."""
    if generation_config is None:
        return {}
    values = {key: getattr(generation_config, key, None) for key in GENERATION_DEFAULT_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def eos_token_ids(config: Any, generation_config: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a reply: from generation_config, config and tokenizer."""
    ids: set[int] = set()
    for value in (
        getattr(generation_config, "eos_token_id", None),
        getattr(config, "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple | set):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def context_length(config: Any, tokenizer: Any) -> int:
    """The longest prompt plus reply the model takes, in tokens.

    The first of ``CONTEXT_LENGTH_KEYS`` the config sets, else the tokenizer's
    ``model_max_length`` when it is a real limit, else ``DEFAULT_CONTEXT_LENGTH``.
    """
    for key in CONTEXT_LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < _SANE_CONTEXT_LIMIT:
        return value
    return DEFAULT_CONTEXT_LENGTH


def _check_source(path: str) -> tuple[str, str | None]:
    """The directory or hub id to load from, and the GGUF file in that directory, if any."""
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        return expanded, _only_gguf_file(expanded)
    if os.path.isfile(expanded) and expanded.endswith(GGUF_SUFFIX):
        return os.path.dirname(os.path.abspath(expanded)), os.path.basename(expanded)
    if os.path.exists(expanded):
        raise ModelLoadError(
            f"model path {path} is a file; give the directory that holds config.json "
            f"or a {GGUF_SUFFIX} file",
            "InvalidSpec",
        )
    looks_local = path.startswith(("/", "./", "../", "~")) or not _HUB_ID.match(path)
    if looks_local:
        raise ModelLoadError(
            f"model path {path} does not exist; give a directory with config.json "
            "(e.g. on the mounted volume under /models) or a hub id such as org/name",
            "InvalidSpec",
        )
    return path, None  # a hub id: transformers downloads it (honouring revision)


def _only_gguf_file(directory: str) -> str | None:
    """The one GGUF file of a directory without config.json (None when it has config.json)."""
    if os.path.isfile(os.path.join(directory, "config.json")):
        return None
    found = sorted(n for n in os.listdir(directory) if n.endswith(GGUF_SUFFIX))
    if len(found) > 1:
        raise ModelLoadError(
            f"{directory} holds several GGUF files ({', '.join(found)}); "
            "give the path of the one to serve",
            "InvalidSpec",
        )
    return found[0] if found else None


def _gpu_count(options: LoadOptions) -> int:
    if options.device not in DEVICE_CHOICES:
        raise ModelLoadError(
            f"unknown device {options.device!r}; choose one of {', '.join(DEVICE_CHOICES)}",
            "InvalidSpec",
        )
    if options.num_gpus < 0:
        raise ModelLoadError(f"--num-gpus must be 0 or more, not {options.num_gpus}", "InvalidSpec")
    if options.device == "cpu":
        return 0
    gpus = max(options.num_gpus, 1) if options.device == "cuda" else options.num_gpus
    if gpus == 0:
        return 0
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < gpus:
        raise ModelLoadError(
            f"{gpus} GPU(s) asked for but {visible} CUDA GPU(s) visible; "
            "use --num-gpus 0 to run on the CPU or give the worker GPUs",
            "InsufficientGpuMemory" if visible else "ModelLoadFailed",
        )
    return gpus


def _config_dict(source: str, revision: str | None) -> dict[str, Any]:
    local = Path(source) / "config.json"
    if Path(source).is_dir():
        if not local.is_file():
            raise ModelLoadError(
                f"{source} has no config.json (nor a {GGUF_SUFFIX} file); "
                "is it a Hugging Face model directory?",
                "InvalidSpec",
            )
        try:
            return json.loads(local.read_text())
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{local} is not valid JSON: {err}") from err

    from transformers import PretrainedConfig

    def fetch() -> dict[str, Any]:
        return PretrainedConfig.get_config_dict(source, revision=revision)[0]

    return _call("fetch config.json of", source, fetch)


def _check_remote_code(source: str, config_dict: dict[str, Any], trust: bool) -> None:
    """Refuse, with a message saying how to allow it, a checkpoint that runs its own code."""
    if trust or "auto_map" not in config_dict:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # A known model_type loads with transformers' own classes; auto_map is then unused.
    if config_dict.get("model_type") in CONFIG_MAPPING:
        return
    raise ModelLoadError(_remote_code_message(source), "InvalidSpec")


def _remote_code_message(source: str) -> str:
    return (
        f"{source}: this checkpoint ships its own model code (auto_map in config.json); "
        "rerun with --trust-remote-code (spec.model.trustRemoteCode: true) if you trust it"
    )


def _call(action: str, source: str, fn: Any) -> Any:
    """Run a transformers call, turning its failures into ModelLoadErrors."""
    try:
        return fn()
    except ModelLoadError:
        raise
    except torch.cuda.OutOfMemoryError as err:
        raise ModelLoadError(
            f"ran out of GPU memory trying to {action} {source}: lower --max-gpu-memory to "
            "leave more room, add GPUs or pass --cpu-offloading",
            "InsufficientGpuMemory",
        ) from err
    except Exception as err:
        # The checkpoint's own code failed: say where, and what to change (worker/remote_code.py)
        if (failure := remote_code_failure(err)) is not None:
            raise ModelLoadError(f"could not {action} {source}: {failure}", REMOTE_REASON) from err
        if not isinstance(err, _LOAD_ERRORS):
            raise
        if "trust_remote_code" in str(err):
            raise ModelLoadError(_remote_code_message(source), "InvalidSpec") from err
        raise ModelLoadError(f"could not {action} {source}: {err}") from err


def _auto_config(source: str, files: dict[str, Any], trust: bool) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, trust_remote_code=trust, **files)


def _auto_tokenizer(source: str, files: dict[str, Any], trust: bool) -> Any:
    # A sentencepiece-only checkpoint (tokenizer.model, no tokenizer.json: Llama-2, Vicuna) is
    # converted here, in from_pretrained, which reads the file with protobuf: a dependency.
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust, **files)
    except (TypeError, AttributeError) as err:
        # known breakage of remote-code tokenizers: load the file unchanged if it is that
        return load_tokenizer_with_sp_model_first(
            err, lambda cls: cls.from_pretrained(source, trust_remote_code=trust, **files)
        )


def _auto_model(
    source: str,
    files: dict[str, Any],
    trust: bool,
    config: Any,
    dtype: torch.dtype,
    extra: dict[str, Any],
    auto_class: str = "AutoModelForCausalLM",
) -> Any:
    import transformers

    return getattr(transformers, auto_class).from_pretrained(
        source, trust_remote_code=trust, config=config, dtype=dtype, **files, **extra
    )


def _auto_dtype(config: Any, *, on_gpu: bool) -> torch.dtype:
    if not on_gpu:
        return torch.float32
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    try:
        stored = as_torch_dtype(stored) if stored is not None else None
    except ValueError:
        stored = None
    if stored == torch.bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _generation_config(source: str, revision: str | None) -> Any:
    from transformers import GenerationConfig

    if Path(source).is_dir() and not (Path(source) / "generation_config.json").is_file():
        return None
    try:
        return GenerationConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError):
        return None
