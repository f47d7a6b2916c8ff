"""The continuous-batching engine, on transformers' own continuous batching manager.

Requests join the running batch at the next step (prefill of newcomers is batched and chunked by
the manager's token budget), every active sequence decodes in the same forward pass over a paged
KV cache, each streams on its own, and a cancelled sequence frees its pages at once.

Per request inside one batch: temperature, top_p and top_k (greedy is top_k=1, which picks the
arg-max exactly as HF ``generate`` does). What the manager cannot do per request (a seed for
reproducible sampling, repetition/presence/frequency penalties) is served by the serial engine on
the same weights, so every request still gets exactly what it asked for.

Checkpoints whose attention the manager cannot page (some remote-code models) are detected at
start by a probe compared with the serial engine's greedy output; they are served serially and the
worker says so (log line, ``kubechat_worker_engine_info{path="serial"}``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching import RequestStatus

from .engine import Engine, EngineError, EngineStats, GenerationRequest, SamplingParams, Step
from .serial_engine import SerialEngine

log = logging.getLogger(__name__)

PROBE_PROMPT = [1, 20, 30, 40, 50, 60, 70, 80]
PROBE_TOKENS = 8


@dataclass
class _Stream:
    """Where one request's outputs go."""

    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    sent: int = 0


def batchable(params: SamplingParams) -> bool:
    """Whether the batch can honour these parameters (else the serial engine takes it)."""
    return (
        params.seed is None
        and params.repetition_penalty == 1.0
        and params.presence_penalty == 0.0
        and params.frequency_penalty == 0.0
    )


def _per_request_kwargs(params: SamplingParams) -> dict[str, Any]:
    if params.greedy:
        return {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
    return {
        "temperature": float(params.temperature),
        "top_k": int(params.top_k) if params.top_k > 0 else 0,
        "top_p": float(params.top_p),
    }


class BatchingEngine(Engine):
    """Continuous batching for checkpoints the manager supports; serial for the rest."""

    path = "batching"

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str,
        capacity: int,
        *,
        max_batch_tokens: int = 256,
        num_blocks: int | None = None,
    ) -> None:
        self._model = model
        self._device = torch.device(device)
        self._capacity = capacity
        self._max_batch_tokens = max_batch_tokens
        self._num_blocks = num_blocks
        self._serial = SerialEngine(model, device, capacity=capacity)
        self._manager: Any = None
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self.fallback_reason: str | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the serial engine, then the batch manager if a probe shows it works here."""
        await self._serial.start()
        if not getattr(self._model, "_supports_attention_backend", False):
            # the paged cache needs transformers' attention interface; custom attention
            # (many remote-code checkpoints) cannot use it
            self.fallback_reason = (
                f"{type(self._model).__name__} does not use transformers' attention backends "
                "(needed for the paged KV cache)"
            )
        try:
            if not self.fallback_reason:
                await asyncio.to_thread(self._start_manager)
        except Exception as exc:  # unsupported attention, remote code, ...
            self.fallback_reason = f"{type(exc).__name__}: {exc}"
            self._stop_manager()
        if self.fallback_reason:
            self.path = "serial"
            log.warning(
                "continuous batching unavailable (%s): serving serially", self.fallback_reason
            )
        else:
            log.info("continuous batching on (max %d tokens per step)", self._max_batch_tokens)

    def _start_manager(self) -> None:
        config = GenerationConfig(
            do_sample=True,
            temperature=0.999,  # non-default values make the per-request processors present
            top_k=50,
            top_p=0.999,
            max_new_tokens=PROBE_TOKENS,
            eos_token_id=-1,
            pad_token_id=0,
        )
        cb = ContinuousBatchingConfig(
            max_batch_tokens=self._max_batch_tokens,
            num_blocks=self._num_blocks,
            per_request_processors=True,
            scheduler_type="prefill_first",
        )
        self._manager = self._model.init_continuous_batching(
            generation_config=config, continuous_batching_config=cb
        )
        self._manager.start()
        rid = self._manager.add_request(
            list(PROBE_PROMPT),
            max_new_tokens=PROBE_TOKENS,
            eos_token_id=-1,
            **_per_request_kwargs(SamplingParams(do_sample=False)),
        )
        result = self._manager.get_result(request_id=rid, timeout=120)
        if result is None or result.error:
            raise RuntimeError(f"probe failed: {getattr(result, 'error', 'no result')}")
        expected = self._greedy_reference(PROBE_PROMPT, PROBE_TOKENS)
        if list(result.generated_tokens) != expected:
            self.fallback_reason = "batched greedy output differs from the model's own"
            return
        self._reader = threading.Thread(target=self._dispatch, name="batch-reader", daemon=True)
        self._reader.start()

    @torch.inference_mode()
    def _greedy_reference(self, prompt: list[int], n: int) -> list[int]:
        ids = torch.tensor([prompt], device=self._device)
        past, out_tokens = None, []
        for _ in range(n):
            out = self._model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            out_tokens.append(token)
            ids = torch.tensor([[token]], device=self._device)
        return out_tokens

    async def stop(self) -> None:
        """Stop the manager and the serial engine."""
        self._stopping.set()
        await asyncio.to_thread(self._stop_manager)
        await self._serial.stop()

    def _stop_manager(self) -> None:
        if self._manager is not None:
            try:
                self._manager.stop(block=True, timeout=10)
            except Exception as exc:
                log.debug("stopping the batch manager: %r", exc)
            self._manager = None

    # ---- serving -------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        """Sequences in the batch (or serial) and waiting."""
        serial = self._serial.stats()
        with self._lock:
            batched = len(self._streams)
        return EngineStats(
            running=batched + serial.running, queued=serial.queued, capacity=self._capacity
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Step]:
        """Stream one request's steps from the batch (or the serial engine)."""
        if self._manager is None or self.fallback_reason or not batchable(request.sampling):
            async for step in self._serial.generate(request):
                yield step
            return
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        stops = sorted(request.stop_token_ids)
        with self._lock:
            rid = self._manager.add_request(
                list(request.prompt_ids),
                max_new_tokens=request.max_new_tokens,
                streaming=True,
                eos_token_id=stops or -1,
                **_per_request_kwargs(request.sampling),
            )
            self._streams[rid] = stream
        finished = False
        try:
            while True:
                output = await stream.out.get()
                if isinstance(output, BaseException):
                    raise EngineError(str(output)) from output
                if output.error:
                    raise EngineError(str(output.error))
                tokens = list(output.generated_tokens)
                done = output.status == RequestStatus.FINISHED
                for i in range(stream.sent, len(tokens)):
                    token = tokens[i]
                    if token in request.stop_token_ids:
                        finished = True
                        yield Step(None, "stop")
                        return
                    last = i + 1 >= request.max_new_tokens
                    yield Step(token, "length" if last else None)
                    if last:
                        finished = True
                        return
                stream.sent = len(tokens)
                if done:
                    finished = True
                    yield Step(None, "stop")
                    return
        finally:
            with self._lock:
                self._streams.pop(rid, None)
            if not finished and self._manager is not None:
                self._manager.cancel_request(rid)

    def _dispatch(self) -> None:
        """Hand every output of the manager to its request's queue, on that request's loop."""
        manager = self._manager
        while not self._stopping.is_set() and manager is not None:
            try:
                output = manager.get_result(timeout=0.1)
            except Exception as exc:
                log.exception("batch manager failed")
                self._fail_all(exc)
                return
            if output is None:
                continue
            with self._lock:
                stream = self._streams.get(output.request_id)
            if stream is not None:
                stream.loop.call_soon_threadsafe(stream.out.put_nowait, output)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.loop.call_soon_threadsafe(stream.out.put_nowait, exc)
