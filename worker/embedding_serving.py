"""Serving logic of ``POST /v1/embeddings``: request -> token ids -> vectors -> OpenAI body.

Inputs are a string, a list of strings, a list of token ids or a list of such lists, as OpenAI
takes them. Text is tokenized the way sentence-transformers tokenizes it (with the tokenizer's
special tokens); token ids are used exactly as given. An input longer than the model takes is a
400, as OpenAI answers it (sentence-transformers would cut it silently). ``dimensions`` is honoured
where the checkpoint was trained for shorter vectors (``Pooling.matryoshka``): the first
``dimensions`` values, scaled back to unit length when the model normalizes; otherwise only the
model's own dimension is accepted.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import torch

from kubechat.openai_errors import OpenAIError, bad_request, model_not_found
from kubechat.openai_protocol import EmbeddingRequest

from .admission import Admission
from .embedding_model import Embedder
from .metrics import WorkerMetrics


@dataclass
class EmbeddingRuntime:
    """A loaded embedding model as serving sees it."""

    names: list[str]
    tokenizer: Any
    engine: Embedder
    context_length: int  # the most tokens one input may have


class EmbeddingServing:
    """The embeddings endpoint's logic for one model."""

    def __init__(
        self, runtime: EmbeddingRuntime, admission: Admission, metrics: WorkerMetrics
    ) -> None:
        self.rt = runtime
        self.admission = admission
        self.metrics = metrics

    def token_ids(self, req: EmbeddingRequest) -> list[list[int]]:
        """The request's inputs as token id lists; 400 naming the parameter when one is bad."""
        if req.model not in self.rt.names:
            raise model_not_found(req.model, self.rt.names)
        pooling = self.rt.engine.pooling
        if req.dimensions is not None and req.dimensions != pooling.dimension:
            if not pooling.matryoshka:
                raise bad_request(
                    f"this model's embeddings have {pooling.dimension} dimensions and it was not "
                    "trained for shorter ones; leave dimensions out or set it to "
                    f"{pooling.dimension}",
                    "dimensions",
                )
            if req.dimensions > pooling.dimension:
                raise bad_request(
                    f"dimensions must be at most {pooling.dimension} for this model",
                    "dimensions",
                )
        vocab = len(self.rt.tokenizer)
        limit = self.rt.context_length
        out = []
        for item in req.inputs():
            if isinstance(item, str):
                ids = self.rt.tokenizer(item)["input_ids"]
            else:
                if any(t < 0 or t >= vocab for t in item):
                    raise bad_request(f"input token ids must be in [0, {vocab})", "input")
                ids = list(item)
            if len(ids) > limit:
                raise bad_request(
                    f"This model takes at most {limit} tokens per input, but input "
                    f"{len(out)} has {len(ids)}. Shorten it.",
                    "input",
                    code="context_length_exceeded",
                )
            out.append(ids)
        return out

    async def create(self, req: EmbeddingRequest, inputs: list[list[int]]) -> dict[str, Any]:
        """The response body: ``inputs`` (the request's :meth:`token_ids`) embedded."""
        started = time.perf_counter()
        vectors = await self.rt.engine.embed(inputs)
        if req.dimensions is not None and req.dimensions < vectors.shape[1]:
            vectors = vectors[:, : req.dimensions]
            if self.rt.engine.pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        tokens = sum(len(ids) for ids in inputs)
        self.metrics.prompt_tokens.labels(req.model).inc(tokens)
        self.metrics.e2e.labels(req.model).observe(time.perf_counter() - started)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, req.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def encode(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    """A vector as OpenAI sends it: a list of floats, or base64 of its float32 little-endian
    bytes (what the openai SDK asks for and decodes by default)."""
    if encoding_format == "base64":
        data = vector.to(torch.float32).numpy().astype("<f4").tobytes()
        return base64.b64encode(data).decode("ascii")
    return vector.tolist()


def completions_refused(names: list[str]) -> OpenAIError:
    """The error for a chat or text completion sent to a worker of an embedding model."""
    return bad_request(
        f"{', '.join(names)} is an embedding model: it answers /v1/embeddings, not completions",
        "model",
    )


def embeddings_refused(model: str, names: list[str]) -> OpenAIError:
    """The error for /v1/embeddings sent to a worker of a generative model: 404 for a name it
    does not serve, else 400 naming the model."""
    if model not in names:
        return model_not_found(model, names)
    return bad_request(
        f"{model} is not an embedding model: it answers chat and text completions, "
        "not /v1/embeddings",
        "model",
    )
