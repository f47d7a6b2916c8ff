"""Assembling a servable model: load weights and tokenizer, pick the prompt template and engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kubechat.demo_model.cache import DEMO_MODEL_PATH, ensure_demo_model

from .engine import Engine
from .loading import LoadedModel, LoadOptions, load_model
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
    limit_concurrency: int = 5


def default_model_names(model_path: str) -> list[str]:
    """FastChat's default: the last component of the model path (``kubechat-demo`` for the demo)."""
    if model_path == DEMO_MODEL_PATH:
        return ["kubechat-demo"]
    return [Path(model_path.rstrip("/")).name or model_path]


def resolve_model_path(model_path: str) -> str:
    """The local directory or hub id to load; builds the demo model on first use."""
    if model_path != DEMO_MODEL_PATH:
        return model_path
    return str(ensure_demo_model(progress=True))


def make_engine(loaded: LoadedModel, capacity: int) -> Engine:
    """The generation engine for a loaded model."""
    engine = SerialEngine(loaded.model, loaded.device, capacity=capacity)
    log.info("generation path: %s", engine.path)
    return engine


def build_runtime(options: RuntimeOptions) -> ModelRuntime:
    """Load the model and wrap it for serving (runs off the event loop)."""
    load = options.load
    load.model_path = resolve_model_path(load.model_path)
    loaded = load_model(load)
    template = resolve_template(options.conv_template, loaded.tokenizer, loaded.generation_config)
    log.info("prompt template: %s; placement: %s", template.name, loaded.placement)
    return ModelRuntime(
        names=options.model_names,
        tokenizer=loaded.tokenizer,
        template=template,
        engine=make_engine(loaded, options.limit_concurrency),
        context_length=loaded.context_length,
        eos_token_ids=set(loaded.eos_token_ids),
        defaults=dict(loaded.generation_defaults),
    )
