"""The continuous-batching engine: one decode loop over a left-padded batch KV cache.

Every step of the loop (on one background thread):

1. newcomers waiting in the queue form a prefill cohort (as many as free slots and the KV budget
   allow, and as many as fit ``max_batch_tokens`` padded prompt tokens: a burst is prefilled a
   group per step, so the first group streams while the next is prefilled); the cohort's prompts
   are left-padded and prefilled together, a single long prompt in chunks of at most
   ``max_batch_tokens`` tokens per step, so running streams keep flowing during a long prompt;
2. all running sequences decode one token together, each with its own attention-mask row and
   position ids; each token goes straight to its request's stream;
3. a cohort whose prefill is done joins the running batch; finished and cancelled sequences
   leave it at once (their cache rows are dropped and unused leading columns cut).

Tokens are picked per request (``sampling.pick_token``: penalties, temperature, top-k, top-p,
its own seeded generator); rows that are plain greedy take one vectorised arg-max. Rows that ask
for logprobs get them from the same step's logits (one log-softmax over those rows); a cohort
with a request for its prompt's logprobs is prefilled keeping every position's logits, so prompt
scoring (``echo`` with ``max_tokens: 0``) runs inside the batch too.

Checkpoints whose forward ignores the attention mask or keeps another kind of cache are found by
a probe at start (batched greedy output of prompts of different lengths compared with the model
run alone); they are served by the serial engine and the worker says so (log line and
``kubechat_worker_engine_info{path="serial"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from .engine import (
    Engine,
    EngineStats,
    GenerationRequest,
    SamplingParams,
    Step,
    TokenLogprob,
    queued_steps,
)
from .grammar import GrammarError, Matcher, mask_logits, pick_allowed
from .padded_cache import append_rows, check_cache, keep_rows, positions, use_growing_layers
from .sampling import new_generator, pick_token, token_logprobs
from .serial_engine import SerialEngine, cache_argument, output_cache

log = logging.getLogger(__name__)

PROBE_PROMPTS = ([1, 20, 30, 40, 50, 60, 70, 80, 90], [1, 33, 44])
PROBE_TOKENS = 6


@dataclass
class _Seq:
    """One request inside the engine thread."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator | None = None
    seen: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    done: bool = False
    #: the prompt's logprobs, filled chunk by chunk while prefilling (when asked for)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    matcher: Matcher | None = None  # where the sequence is in its grammar, if it has one

    @property
    def reserved(self) -> int:
        """Cache columns this sequence may need at most."""
        return len(self.request.prompt_ids) + self.request.max_new_tokens

    @property
    def plain_greedy(self) -> bool:
        """Greedy without penalties: the token is the arg-max of the row's (masked) logits."""
        p = self.request.sampling
        return (
            p.greedy
            and p.repetition_penalty == 1.0
            and not (p.presence_penalty or p.frequency_penalty)
        )


def prefill_group(prompt_lengths: list[int], chunk_tokens: int) -> int:
    """How many of these newcomers (in order) to prefill together: as many as fit one chunk of
    ``chunk_tokens`` once left-padded to the longest, and at least one.

    A burst of newcomers is prefilled a group at a time rather than all at once: the first
    group streams its first tokens (and starts decoding) after one chunk instead of waiting for
    every prompt of the burst. A single prompt longer than a chunk is cut into columns instead.
    """
    longest = 0
    for count, length in enumerate(prompt_lengths):
        longest = max(longest, length)
        if count and (count + 1) * longest > chunk_tokens:
            return count
    return len(prompt_lengths)


class _Outbox:
    """Steps for the requests' queues, handed to their event loop once per engine step: one
    wake-up of the loop for the whole batch instead of one per token."""

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, object]] = []

    def put(self, seq: _Seq, item: object) -> None:
        """Queue ``item`` for ``seq``'s stream (delivered at the next flush)."""
        self._items.append((seq.loop, seq.out, item))

    def flush(self) -> None:
        """Deliver everything queued since the last flush."""
        if not self._items:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}
        for loop, out, item in self._items:
            by_loop.setdefault(loop, []).append((out, item))
        self._items = []
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[asyncio.Queue, object]]) -> None:
    for out, item in items:
        out.put_nowait(item)


@dataclass
class _Call:
    """A function to run on the engine thread between steps (its result goes to ``future``)."""

    fn: Callable[[], object]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future

    def run(self) -> None:
        try:
            value = self.fn()
        except Exception as exc:
            self.loop.call_soon_threadsafe(_settle, self.future, None, exc)
        else:
            self.loop.call_soon_threadsafe(_settle, self.future, value, None)


def _settle(future: asyncio.Future, value: object, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


@dataclass
class _Cohort:
    """Newcomers being prefilled together."""

    seqs: list[_Seq]
    ids: torch.Tensor  # (rows, width), left-padded prompts
    mask: torch.Tensor  # (rows, width)
    cache: object = None
    done_columns: int = 0


class BatchingEngine(Engine):
    """Continuous batching over a padded KV cache; serial for checkpoints that cannot batch."""

    path = "batching"

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str,
        capacity: int,
        *,
        max_batch_tokens: int = 128,
        kv_budget_tokens: int | None = None,
    ) -> None:
        self._model = model
        self._device = torch.device(device)
        self._capacity = capacity
        self._chunk_tokens = max(16, max_batch_tokens)
        self._kv_budget = kv_budget_tokens
        self._serial = SerialEngine(model, device, capacity=capacity)
        # Every forward pass runs on the engine thread (the probe's too): torch's OpenMP runtime
        # keeps a thread team per thread that runs parallel regions, and with more team threads
        # than cores it stops spinning between regions (each decode step ~20% slower).
        self._incoming: queue.Queue[_Seq | _Call | None] = queue.Queue()
        self._waiting: list[_Seq] = []
        self._running: list[_Seq] = []
        self._cohort: _Cohort | None = None
        self._cache: object = None
        self._mask: torch.Tensor | None = None
        self._last: torch.Tensor | None = None  # (rows, 1) last token of each running row
        self._active = 0  # admitted and not yet finished or cancelled (event-loop side)
        self._in_batch = 0  # decoding or prefilling (engine side, refreshed every step)
        self._kv_reserved = 0  # cache positions the batch holds room for (same refresh)
        self._lock = threading.Lock()
        self._outbox = _Outbox()
        self._thread: threading.Thread | None = None
        self.fallback_reason: str | None = None
        self._cache_arg = cache_argument(model)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the loop thread, then probe that batching reproduces the model run alone."""
        await self._serial.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="batch-engine", daemon=True)
            self._thread.start()
        try:
            await self._probe()
        except Exception as exc:  # a cache or forward this loop cannot drive
            self.fallback_reason = f"{type(exc).__name__}: {exc}"
        if self.fallback_reason:
            self.path = "serial"
            log.warning(
                "continuous batching unavailable (%s): serving serially", self.fallback_reason
            )
        else:
            log.info(
                "continuous batching on (up to %d sequences, prefill chunks of %d tokens, "
                "KV budget %s tokens)",
                self._capacity,
                self._chunk_tokens,
                self._kv_budget or "unbounded",
            )

    async def _probe(self) -> None:
        greedy = SamplingParams(do_sample=False)
        requests = [GenerationRequest(list(p), PROBE_TOKENS, greedy) for p in PROBE_PROMPTS]
        got = await asyncio.gather(*(self._collect(r) for r in requests))
        for prompt, tokens in zip(PROBE_PROMPTS, got, strict=True):
            expected = await self._on_engine_thread(
                lambda prompt=prompt: self._alone(list(prompt), PROBE_TOKENS)
            )
            if tokens != expected:
                self.fallback_reason = "batched greedy output differs from the model run alone"
                return

    async def _collect(self, request: GenerationRequest) -> list[int]:
        steps = [s.token_id async for s in self._generate_batched(request)]
        return [t for t in steps if t is not None]

    async def _on_engine_thread(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the engine thread between two steps and return its result."""
        loop = asyncio.get_running_loop()
        call = _Call(fn, loop, loop.create_future())
        self._incoming.put(call)
        return await call.future

    @torch.inference_mode()
    def _alone(self, prompt: list[int], n: int) -> list[int]:
        ids = torch.tensor([prompt], device=self._device)
        past, tokens = None, []
        for _ in range(n):
            out = self._model(input_ids=ids, use_cache=True, **{self._cache_arg: past})
            past = output_cache(out)
            tokens.append(int(out.logits[0, -1].argmax()))
            ids = torch.tensor([[tokens[-1]]], device=self._device)
        return tokens

    async def stop(self) -> None:
        """Stop the loop thread and the serial engine; unfinished requests end with an error."""
        if self._thread is not None:
            self._incoming.put(None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        await self._serial.stop()

    # ---- serving -------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        """Sequences decoding (or prefilling) and sequences waiting for a slot."""
        serial = self._serial.stats()
        with self._lock:
            active = self._active
        running = min(active, self._in_batch)
        if self.path == "serial":
            kv_used = serial.kv_cache_utilization
        elif self._kv_budget:
            kv_used = self._kv_reserved / self._kv_budget
        else:
            kv_used = self._in_batch / self._capacity
        return EngineStats(
            running=running + serial.running,
            queued=active - running + serial.queued,
            capacity=self._capacity,
            kv_cache_utilization=min(1.0, kv_used),
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Step]:
        """Stream one request's steps; closing the iterator cancels it and frees its slot."""
        if self.path == "serial":
            steps = self._serial.generate(request)
        else:
            steps = self._generate_batched(request)
        try:
            async for step in steps:
                yield step
        finally:
            await steps.aclose()  # closing this iterator must cancel the inner one now

    async def _generate_batched(self, request: GenerationRequest) -> AsyncIterator[Step]:
        if request.max_new_tokens <= 0 and request.prompt_logprobs is None:
            yield Step(None, "length")
            return
        seq = _Seq(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._active += 1
        self._incoming.put(seq)
        try:
            async for step in queued_steps(seq.out):
                yield step
        finally:
            seq.cancelled.set()
            with self._lock:
                self._active -= 1

    # ---- the loop (engine thread) --------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            idle = not (self._running or self._cohort or self._waiting)
            try:
                while True:
                    seq = self._incoming.get() if idle else self._incoming.get_nowait()
                    if seq is None:
                        self._fail_all(RuntimeError("the engine stopped"))
                        self._outbox.flush()
                        return
                    if isinstance(seq, _Call):
                        seq.run()
                        continue
                    self._waiting.append(seq)
                    idle = False
            except queue.Empty:
                pass
            try:
                with torch.inference_mode():
                    self._step()
            except Exception as exc:  # reported to the requests in the batch; the loop goes on
                log.exception("batched generation failed")
                self._fail_batch(exc)
            self._outbox.flush()
            batch = self._running + (self._cohort.seqs if self._cohort else [])
            self._in_batch = len(batch)
            # as _fits counts it: every row as wide as the widest reservation
            self._kv_reserved = len(batch) * max((s.reserved for s in batch), default=0)

    def _step(self) -> None:
        self._drop_cancelled()
        if self._cohort is None:
            self._form_cohort()
        if self._cohort is not None:
            self._prefill_chunk()
            self._outbox.flush()  # newcomers' first tokens go out before the decode step
        if self._running:
            self._decode()

    def _drop_cancelled(self) -> None:
        self._waiting = [s for s in self._waiting if not s.cancelled.is_set()]
        if any(s.cancelled.is_set() for s in self._running):
            self._keep([i for i, s in enumerate(self._running) if not s.cancelled.is_set()])

    def _keep(self, rows: list[int]) -> None:
        """Keep only these running rows (finished and cancelled ones leave the cache now)."""
        if len(rows) == len(self._running):
            return
        self._running = [self._running[i] for i in rows]
        if not rows:
            self._cache = self._mask = self._last = None
            return
        self._mask = keep_rows(self._cache, self._mask, rows)
        self._last = self._last[rows]

    def _fits(self, rows: int, width: int) -> bool:
        return self._kv_budget is None or rows * width <= self._kv_budget

    def _form_cohort(self) -> None:
        free = self._capacity - len(self._running)
        if free <= 0 or not self._waiting:
            return
        width = max((s.reserved for s in self._running), default=0)
        chosen: list[_Seq] = []
        for seq in self._waiting[:free]:
            wider = max(width, seq.reserved)
            if not self._fits(len(self._running) + len(chosen) + 1, wider):
                break
            chosen.append(seq)
            width = wider
        if not chosen:
            if not self._running and self._waiting:
                chosen = [self._waiting[0]]  # a lone sequence always runs, even over budget
            else:
                return
        chosen = chosen[
            : prefill_group([len(q.request.prompt_ids) for q in chosen], self._chunk_tokens)
        ]
        self._waiting = self._waiting[len(chosen) :]
        longest = max(len(s.request.prompt_ids) for s in chosen)
        ids = torch.zeros(len(chosen), longest, dtype=torch.long)
        mask = torch.zeros(len(chosen), longest, dtype=torch.long)
        for row, seq in enumerate(chosen):
            prompt = seq.request.prompt_ids
            ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, longest - len(prompt) :] = 1
            seq.seen = list(prompt)
            if seq.request.prompt_logprobs is not None:
                seq.prompt_logprobs = [None]  # nothing predicts the first token
            if seq.request.grammar is not None:
                seq.matcher = seq.request.grammar.matcher()
            params = seq.request.sampling
            seq.generator = None if params.greedy else new_generator(params, self._device)
        self._cohort = _Cohort(chosen, ids.to(self._device), mask.to(self._device))

    def _prefill_chunk(self) -> None:
        cohort = self._cohort
        rows, width = cohort.ids.shape
        start = cohort.done_columns
        end = min(width, start + max(1, self._chunk_tokens // rows))
        mask = cohort.mask[:, :end]
        scoring = any(s.prompt_logprobs is not None for s in cohort.seqs)
        try:
            out = self._model(
                input_ids=cohort.ids[:, start:end],
                attention_mask=mask,
                position_ids=positions(mask, end - start),
                use_cache=True,
                logits_to_keep=0 if scoring else 1,  # 0: every position's
                **{self._cache_arg: cohort.cache},
            )
            cohort.cache = check_cache(output_cache(out))
            use_growing_layers(cohort.cache)
            if scoring:
                self._score_prompts(cohort, out.logits, start, end)
        except Exception as exc:
            # the newcomers' own cache is the only state touched: they fail, the running
            # batch decodes on (a prompt too long for the memory left must not end every stream)
            log.exception("prefill of %d newcomer(s) failed", rows)
            self._cohort = None
            self._fail(cohort.seqs, exc)
            return
        cohort.done_columns = end
        if end < width:
            return
        self._cohort = None
        logits = out.logits[:, -1]
        tokens = self._pick(logits, cohort.seqs)
        logprobs = self._logprobs(logits, cohort.seqs, tokens)
        live = [i for i, seq in enumerate(cohort.seqs) if self._emit(seq, tokens[i], logprobs[i])]
        if not live:
            return
        mask = cohort.mask
        last = torch.tensor([[tokens[i]] for i in live], dtype=torch.long, device=self._device)
        if len(live) < rows:
            mask = keep_rows(cohort.cache, mask, live)
        seqs = [cohort.seqs[i] for i in live]
        if not self._running:
            self._cache, self._mask, self._last = cohort.cache, mask, last
        else:
            self._mask = append_rows(self._cache, self._mask, cohort.cache, mask)
            self._last = torch.cat([self._last, last])
        self._running.extend(seqs)

    def _decode(self) -> None:
        ones = self._mask.new_ones(self._mask.shape[0], 1)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = self._model(
            input_ids=self._last,
            attention_mask=self._mask,
            position_ids=positions(self._mask, 1),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: self._cache},
        )
        self._cache = check_cache(output_cache(out))
        logits = out.logits[:, -1]
        tokens = self._pick(logits, self._running)
        logprobs = self._logprobs(logits, self._running, tokens)
        self._last = torch.tensor([[t] for t in tokens], dtype=torch.long, device=self._device)
        live = [i for i, seq in enumerate(self._running) if self._emit(seq, tokens[i], logprobs[i])]
        self._keep(live)

    def _score_prompts(self, cohort: _Cohort, logits: torch.Tensor, start: int, end: int) -> None:
        """Add the logprobs of the prompt tokens that columns ``start..end`` predict (column
        ``c`` predicts the token in column ``c + 1``) to the rows that asked for them."""
        width = cohort.ids.shape[1]
        for row, seq in enumerate(cohort.seqs):
            if seq.prompt_logprobs is None:
                continue
            first = width - len(seq.request.prompt_ids)  # the row's first real column
            lo, hi = max(start, first), min(end, width - 1)
            if lo >= hi:
                continue
            targets = cohort.ids[row, lo + 1 : hi + 1].tolist()
            top = seq.request.prompt_logprobs
            seq.prompt_logprobs.extend(
                token_logprobs(logits[row, lo - start : hi - start], targets, [top] * len(targets))
            )

    def _logprobs(
        self, logits: torch.Tensor, seqs: list[_Seq], tokens: list[int]
    ) -> list[TokenLogprob | None]:
        """The picked tokens' logprobs for the rows that asked for them (None for the others),
        from one log-softmax over those rows."""
        rows = [i for i, seq in enumerate(seqs) if seq.request.logprobs is not None]
        out: list[TokenLogprob | None] = [None] * len(seqs)
        if not rows:
            return out
        picked = logits[rows] if len(rows) < len(seqs) else logits
        found = token_logprobs(
            picked, [tokens[i] for i in rows], [seqs[i].request.logprobs or 0 for i in rows]
        )
        for i, value in zip(rows, found, strict=True):
            out[i] = value
        return out

    def _pick(self, logits: torch.Tensor, seqs: list[_Seq]) -> list[int]:
        """One token per row: one arg-max for the plain greedy rows (after one grammar mask over
        the rows that have a grammar), ``pick_token`` for the others."""
        constrained = [i for i, seq in enumerate(seqs) if seq.matcher is not None]
        if constrained:
            rows = mask_logits(logits[constrained], [seqs[i].matcher for i in constrained])
            if len(constrained) == len(seqs):
                logits = rows
            else:
                logits = logits.index_copy(0, torch.tensor(constrained, device=rows.device), rows)
        tokens = logits.argmax(dim=-1).tolist()
        for row, seq in enumerate(seqs):
            if seq.plain_greedy and seq.matcher is None:
                continue  # the common row: nothing more to do
            pick = self._picker(seq)
            if not seq.plain_greedy:
                tokens[row] = pick(logits[row])
            if seq.matcher is not None:
                with contextlib.suppress(GrammarError):  # _emit fails this sequence alone
                    tokens[row] = pick_allowed(logits[row], seq.matcher, pick, tokens[row])
        return tokens

    @staticmethod
    def _picker(seq: _Seq) -> Callable[[torch.Tensor], int]:
        """How ``seq`` picks its token from one row of logits."""
        if seq.plain_greedy:
            return lambda row: int(row.argmax())
        params = seq.request.sampling
        return lambda row: pick_token(row, params, seq.generator, seq.seen, seq.generated)

    def _emit(self, seq: _Seq, token: int, logprob: TokenLogprob | None = None) -> bool:
        """Send one token to its stream; False when the sequence is over."""
        if seq.cancelled.is_set():
            return False
        request = seq.request
        first: dict = {}
        if seq.prompt_logprobs is not None:  # the sequence's first step carries them
            first["prompt_logprobs"] = tuple(seq.prompt_logprobs)
            seq.prompt_logprobs = None
        if request.max_new_tokens <= 0:  # the prompt scored, nothing generated
            self._outbox.put(seq, Step(None, "length", **first))
            return False
        if token in request.stop_token_ids or (seq.matcher and seq.matcher.ends_with(token)):
            self._outbox.put(seq, Step(None, "stop", **first))
            return False
        if seq.matcher is not None:
            try:
                seq.matcher.advance(token)
            except GrammarError as exc:  # this sequence fails; the batch decodes on
                self._outbox.put(seq, exc)
                return False
        seq.generated.append(token)
        seq.seen.append(token)
        last = len(seq.generated) >= request.max_new_tokens
        self._outbox.put(seq, Step(token, "length" if last else None, logprob, **first))
        return not last

    def _fail(self, seqs: list[_Seq], exc: BaseException) -> None:
        for seq in seqs:
            self._outbox.put(seq, exc)

    def _fail_batch(self, exc: BaseException) -> None:
        """A step failed: the sequences in the batch end with the error (their cache may be
        half-written); those still waiting for a slot are untouched and start next."""
        self._fail(self._running + (self._cohort.seqs if self._cohort else []), exc)
        self._running, self._cohort = [], None
        self._cache = self._mask = self._last = None

    def _fail_all(self, exc: BaseException) -> None:
        self._fail_batch(exc)
        self._fail(self._waiting, exc)
        self._waiting = []
