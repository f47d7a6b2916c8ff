"""The one-at-a-time engine: requests wait in a queue and run alone, token by token.

It works with any causal LM whose forward takes ``input_ids`` and a cache (``cache`` in
transformers 5, ``past_key_values`` in older remote code), so it is the path of last resort.
Model work runs on one background thread; tokens reach the event loop through thread-safe queue
hand-offs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from .engine import DONE, Engine, EngineStats, GenerationRequest, Step, queued_steps
from .grammar import mask_logits, pick_allowed
from .model_thread import ModelThread
from .sampling import new_generator, pick_token, prompt_logprobs, token_logprobs

log = logging.getLogger(__name__)


def cache_argument(model: torch.nn.Module) -> str:
    """The name ``model.forward`` takes its cache by: ``cache`` in transformers 5, else (older
    remote code) ``past_key_values``."""
    for cls in type(model).__mro__:  # a forward taking only **kwargs passes them up the MRO
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        accepted = inspect.signature(forward).parameters
        for name in ("cache", "past_key_values"):
            if name in accepted:
                return name
    return "past_key_values"


def output_cache(output: object) -> object:
    """The cache a forward returned (``cache`` in transformers 5, else ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class SerialEngine(Engine):
    """Runs one sequence at a time on a background thread."""

    path = "serial"

    def __init__(
        self, model: torch.nn.Module, device: torch.device | str, capacity: int = 1
    ) -> None:
        self._model = model
        self._device = torch.device(device)
        self._capacity = capacity
        self._thread: ModelThread[_Job] = ModelThread("serial-engine", self._serve_one)
        self._running = 0
        self._cache_arg = cache_argument(model)

    async def start(self) -> None:
        """Start the model thread."""
        self._thread.start()

    async def stop(self) -> None:
        """Stop the model thread after the current step."""
        await self._thread.stop()

    def stats(self) -> EngineStats:
        """Running is 0 or 1; every other admitted request waits in the queue."""
        return EngineStats(
            running=self._running,
            queued=self._thread.queued(),
            capacity=self._capacity,
            kv_cache_utilization=float(self._running),
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Step]:
        """Queue the request and stream its steps; closing the iterator cancels it."""
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        self._thread.put(job)
        try:
            async for step in queued_steps(job.out):
                yield step
        finally:
            job.cancelled.set()

    def _serve_one(self, job: _Job) -> None:
        self._running = 1
        try:
            with torch.inference_mode():
                self._run(job)
        except Exception as exc:  # reported to the one request, the engine keeps serving
            log.exception("generation failed")
            job.emit(exc)
        finally:
            self._running = 0
            job.emit(DONE)

    def _run(self, job: _Job) -> None:
        req = job.request
        params = req.sampling
        generator = None if params.greedy else new_generator(params, self._device)
        seen = list(req.prompt_ids)
        generated: list[int] = []
        input_ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self._device)
        past = None
        first: dict = {}  # what the first step carries besides its token (prompt logprobs)
        matcher = req.grammar.matcher() if req.grammar is not None else None
        for i in range(max(1, req.max_new_tokens)):
            if job.cancelled.is_set():
                return
            out = self._model(input_ids=input_ids, use_cache=True, **{self._cache_arg: past})
            past = output_cache(out)
            if i == 0 and req.prompt_logprobs is not None:
                first["prompt_logprobs"] = prompt_logprobs(
                    out.logits[0, :-1], req.prompt_ids, req.prompt_logprobs
                )
            if req.max_new_tokens <= 0:  # the prompt scored, nothing generated
                job.emit(Step(None, "length", **first))
                return
            logits = out.logits[0, -1]
            allowed = logits if matcher is None else mask_logits(logits[None], [matcher])[0]
            token = pick_token(allowed, params, generator, seen, generated)
            if matcher is not None:
                token = pick_allowed(
                    allowed,
                    matcher,
                    lambda row: pick_token(row, params, generator, seen, generated),
                    token,
                )
            if token in req.stop_token_ids or (matcher and matcher.ends_with(token)):
                job.emit(Step(None, "stop", **first))
                return
            if matcher is not None:
                matcher.advance(token)
            logprob = None
            if req.logprobs is not None:
                logprob = token_logprobs(logits[None], [token], [req.logprobs])[0]
            generated.append(token)
            seen.append(token)
            last = i == req.max_new_tokens - 1
            job.emit(Step(token, "length" if last else None, logprob, **first))
            first = {}
            input_ids = torch.tensor([[token]], dtype=torch.long, device=self._device)
