"""Sentence-embedding checkpoints: recognising one, and turning token ids into vectors.

A worker serves an embedding model when its checkpoint is laid out the way sentence-transformers
saves one: ``modules.json`` lists a Transformer module, a ``Pooling`` module (whose folder, such
as ``1_Pooling/config.json``, says how token vectors become one vector) and optionally a
``Normalize`` module. Nothing else marks it, so the same ModelDeployment works with ``kubectl
apply`` and ``kubechat up``: the checkpoint decides, as it decides the chat template.

Vectors are computed as sentence-transformers computes them: the transformer's last hidden
states, pooled over the real (unpadded) tokens by the pooling config's modes (concatenated in
its order when it names several), then scaled to unit length when the Normalize module is there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .engine import EngineStats, Runner
from .model_thread import ModelThread

log = logging.getLogger(__name__)

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
#: sentence-transformers' pooling modes, in the order it concatenates them
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "lasttoken")


class EmbeddingLayoutError(ValueError):
    """A sentence-transformers checkpoint this worker cannot compute as its library would."""


@dataclass(frozen=True)
class Pooling:
    """How an embedding checkpoint turns its token vectors into one vector."""

    modes: tuple[str, ...]  # members of POOLING_MODES, in that order
    normalize: bool
    dimension: int  # the length of the vectors the checkpoint produces
    max_tokens: int | None = None  # sentence_bert_config.json's max_seq_length
    #: trained so that a vector's first dimensions are an embedding too (Matryoshka): only
    #: then may a request ask for fewer ``dimensions``
    matryoshka: bool = False


def embedding_layout(model_path: str | Path) -> Pooling | None:
    """The pooling of a sentence-transformers checkpoint in directory ``model_path``; None for
    any other checkpoint (a causal LM). EmbeddingLayoutError for modules it cannot run."""
    root = Path(model_path)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    kinds = [m.get("type", "") for m in modules]
    if _POOLING not in kinds:
        return None
    unknown = [k for k in kinds if k not in (_TRANSFORMER, _POOLING, _NORMALIZE)]
    if unknown:
        raise EmbeddingLayoutError(
            f"{root}: modules.json has modules this worker does not run: {', '.join(unknown)} "
            "(supported: Transformer, Pooling, Normalize)"
        )
    pooling_dir = root / next(m.get("path", "") for m in modules if m.get("type") == _POOLING)
    config = json.loads((pooling_dir / "config.json").read_text())
    modes = tuple(m for m in POOLING_MODES if config.get(f"pooling_mode_{m}"))
    unsupported = [
        k[len("pooling_mode_") :]
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v and k[len("pooling_mode_") :] not in POOLING_MODES
    ]
    if unsupported or not modes:
        raise EmbeddingLayoutError(
            f"{pooling_dir / 'config.json'}: pooling mode "
            f"{', '.join(unsupported) or '(none)'} is not supported "
            f"(supported: {', '.join(POOLING_MODES)})"
        )
    st_config = root / "sentence_bert_config.json"
    st = json.loads(st_config.read_text()) if st_config.is_file() else {}
    max_tokens = st.get("max_seq_length")
    return Pooling(
        modes=modes,
        normalize=_NORMALIZE in kinds,
        dimension=int(config["word_embedding_dimension"]) * len(modes),
        max_tokens=int(max_tokens) if max_tokens else None,
        matryoshka=_card_says_matryoshka(root / "README.md"),
    )


def _card_says_matryoshka(readme: Path) -> bool:
    """Whether the model card's front matter tags the model as Matryoshka-trained (the cards
    sentence-transformers writes list its loss, ``loss:MatryoshkaLoss``, among the tags)."""
    if not readme.is_file():
        return False
    text = readme.read_text(errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    return bool(front and re.search(r"^\s*-\s*.*matryoshka", front.group(1), re.I | re.M))


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """One vector per row of ``hidden`` (rows, tokens, width) over the tokens ``mask`` (rows,
    tokens; right-padded) marks, as sentence-transformers pools and normalizes."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    parts = []
    for mode in pooling.modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(hidden.masked_fill(weights == 0, -1e9).max(dim=1).values)
        elif mode == "mean_tokens":
            parts.append((hidden * weights).sum(dim=1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            parts.append((hidden * weights).sum(dim=1) / counts.sqrt())
        else:  # lasttoken
            last = mask.sum(dim=1).long() - 1
            parts.append(hidden[torch.arange(hidden.shape[0]), last.clamp(min=0)])
    vectors = torch.cat(parts, dim=-1)
    if pooling.normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return vectors


@dataclass
class _Job:
    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    cancelled: threading.Event = field(default_factory=threading.Event)


class Embedder(Runner):
    """Runs an embedding model on one background thread: each request's inputs are padded and
    run together, in batches of at most ``batch_tokens`` padded tokens."""

    path = "embedding"

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str,
        pooling: Pooling,
        pad_token_id: int,
        capacity: int,
        batch_tokens: int = 8192,
    ) -> None:
        self._model = model
        self._device = torch.device(device)
        self.pooling = pooling
        self._pad = pad_token_id
        self._capacity = capacity
        self._batch_tokens = batch_tokens
        self._thread: ModelThread[_Job] = ModelThread("embedder", self._serve_one)
        self._running = 0

    async def start(self) -> None:
        """Start the model thread."""
        self._thread.start()

    async def stop(self) -> None:
        """Stop the model thread after the current batch."""
        await self._thread.stop()

    def stats(self) -> EngineStats:
        """Requests being embedded (0 or 1) and waiting."""
        return EngineStats(
            running=self._running, queued=self._thread.queued(), capacity=self._capacity
        )

    async def embed(self, inputs: list[list[int]]) -> torch.Tensor:
        """The vectors of ``inputs`` (token id lists), one float32 row each, on the CPU.
        Cancelling the call drops the inputs not yet run."""
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop, loop.create_future())
        self._thread.put(job)
        try:
            return await job.future
        finally:
            job.cancelled.set()

    def _serve_one(self, job: _Job) -> None:
        self._running = 1
        try:
            with torch.inference_mode():
                result: object = self._run(job)
        except Exception as exc:  # reported to the one request; the runner goes on
            log.exception("embedding failed")
            result = exc
        finally:
            self._running = 0
        job.loop.call_soon_threadsafe(_settle, job.future, result)

    def _run(self, job: _Job) -> torch.Tensor | None:
        rows: list[torch.Tensor] = []
        start = 0
        while start < len(job.inputs):
            if job.cancelled.is_set():
                return None
            end, longest = start, 0
            while end < len(job.inputs):
                wider = max(longest, len(job.inputs[end]))
                if end > start and (end - start + 1) * wider > self._batch_tokens:
                    break
                longest, end = wider, end + 1
            rows.append(self._batch(job.inputs[start:end], longest))
            start = end
        return torch.cat(rows)

    def _batch(self, inputs: list[list[int]], width: int) -> torch.Tensor:
        ids = torch.full((len(inputs), width), self._pad, dtype=torch.long)
        mask = torch.zeros(len(inputs), width, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        out = self._model(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden.float(), mask, self.pooling).cpu()


def _settle(future: asyncio.Future, result: object) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
