"""The engine interface: what the API layer asks of a generation engine.

An engine takes token ids in and streams token ids out. Text, stop strings, chat templates and
HTTP live above it, so every engine (one-at-a-time, continuous batching) behaves the same to users.
Closing the async iterator returned by :meth:`Engine.generate` cancels the request and frees its
slot at once; this is how client disconnects and stop strings end generation.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grammar import Grammar


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling parameters, already merged with the model's defaults."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    do_sample: bool = True

    @property
    def greedy(self) -> bool:
        """True when the next token is always the most likely one."""
        return not self.do_sample or self.temperature <= 1e-5


@dataclass
class GenerationRequest:
    """One sequence to generate.

    ``logprobs`` asks for each generated token's log-probability and its ``logprobs`` most
    likely alternatives; ``prompt_logprobs`` the same for the prompt's tokens (the first has none:
    nothing predicts it). Both are None when not wanted. With ``prompt_logprobs`` set,
    ``max_new_tokens`` may be 0: the prompt is scored and nothing generated. ``grammar``
    constrains every token to what it allows (the sequence ends when it is complete).
    """

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: frozenset[int] = frozenset()
    request_id: str = ""
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    grammar: Grammar | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model (log-softmax of its logits, before penalties,
    temperature, top-k/top-p or a grammar touch them) and the most likely tokens' at that
    position, most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Step:
    """One generated token; ``finish_reason`` is set on the last step ("stop" or "length").

    A stop token ends the sequence with ``token_id`` None: it is never part of the output.
    ``logprob`` is the token's when the request asked for logprobs; the sequence's first step
    carries ``prompt_logprobs`` when the request asked for those (None for the first token).
    """

    token_id: int | None
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None


@dataclass(frozen=True)
class EngineStats:
    """Load figures reported in metrics and heartbeat leases."""

    running: int
    queued: int
    capacity: int
    # share of the engine's KV cache room in use, 0..1 (the Inference Extension's
    # KVCacheUtilization): the batching engine's reserved positions over its KV budget, or its
    # rows over its capacity when only the batch size bounds it; the serial engine's one slot
    kv_cache_utilization: float = 0.0


class EngineError(RuntimeError):
    """The engine failed while generating (answered as HTTP 500 with the message)."""


class Runner(abc.ABC):
    """What the worker's life needs of whatever runs its model: start, stop, load figures.
    A generation :class:`Engine` is one; an embedding model's runner another."""

    #: which path the model runs on, reported in logs and metrics
    path: str = "unknown"

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """Current running and queued sequences and the capacity."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start background work (threads, loops). Called once before serving."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop background work; pending requests end with an error."""


class Engine(Runner):
    """A generation engine: one model, many concurrent requests."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Step]:
        """Stream the steps of one request; closing the iterator cancels it."""


#: put on a request's queue by an engine thread when the request is over
DONE = object()


async def queued_steps(out: asyncio.Queue) -> AsyncIterator[Step]:
    """Steps an engine thread puts on ``out`` until ``DONE``, a finishing step or an error
    (raised as EngineError). Shared by every engine that hands tokens over from a thread."""
    while True:
        item = await out.get()
        if item is DONE:
            return
        if isinstance(item, BaseException):
            raise EngineError(str(item)) from item
        yield item
        if item.finish_reason is not None:
            return
