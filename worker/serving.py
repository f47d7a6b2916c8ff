"""Serving logic of the OpenAI endpoints: request -> prompt ids -> engine -> text -> response.

HTTP lives in ``api``; this module knows the OpenAI semantics: defaults from the model's
generation_config, context-window checks, ``n`` choices, stop strings, usage, streaming chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubechat.openai_errors import OpenAIError, bad_request, model_not_found
from kubechat.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    new_id,
    now,
)

from .admission import Admission, Slot
from .engine import Engine, EngineError, GenerationRequest, SamplingParams, TokenLogprob
from .logprobs import LogprobsFormat, logprobs_format, requested_logprobs
from .metrics import WorkerMetrics
from .stream_chunks import DONE_EVENT, KEEPALIVE, StreamChunks, error_event
from .structured_output import response_grammar
from .text_stream import IncrementalDecoder, StopMatcher
from .tool_calls import ToolUse, chat_message, tool_use

DEFAULT_MAX_TOKENS = 256

# receives (sequence, new text, whether this is the sequence's last piece)
Sink = Callable[["_Sequence", str, bool], Awaitable[None]]


class PromptTemplate(Protocol):
    """What serving needs of a chat template (see ``templates.ChatTemplate``)."""

    name: str
    stop_strings: list[str]
    stop_token_ids: set[int]

    def encode(self, messages: list[dict]) -> list[int]: ...


@dataclass
class ModelRuntime:
    """A loaded model as serving sees it."""

    names: list[str]
    tokenizer: Any
    template: PromptTemplate
    engine: Engine
    context_length: int
    eos_token_ids: set[int]
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Sequence:
    """One choice being generated."""

    index: int
    prompt_tokens: int
    completion_tokens: int = 0
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when asked for
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None  # when asked for


@dataclass
class _Job:
    """A validated request, ready to run: one GenerationRequest per choice."""

    endpoint: str
    model: str
    requests: list[GenerationRequest]
    stops: list[str]
    prompt_texts: list[str]  # for completions' echo
    prompt_tokens: int = 0  # counted once per prompt, whatever n is
    echo: bool = False
    include_usage: bool = False
    started: float = field(default_factory=time.perf_counter)
    error: OpenAIError | None = None  # what a stream reported in its error event, if it did
    logprobs: LogprobsFormat | None = None  # when the request asked for logprobs
    tools: ToolUse | None = None  # a chat request's tools: rendered, forced, parsed

    @property
    def chat(self) -> bool:
        """Whether this is a chat completion (else a text completion)."""
        return self.endpoint == "chat"

    def response_id(self) -> str:
        """A new id for this job's response (``chatcmpl-...`` or ``cmpl-...``)."""
        return new_id("chatcmpl" if self.chat else "cmpl")

    def echoed(self, index: int) -> str | None:
        """The prompt choice ``index`` starts with when completions echo it, else None."""
        if not self.echo:
            return None
        return self.prompt_texts[index // (len(self.requests) // len(self.prompt_texts))]


class Serving:
    """The OpenAI endpoints' logic for one model."""

    def __init__(
        self,
        runtime: ModelRuntime,
        admission: Admission,
        metrics: WorkerMetrics,
        stream_interval: int = 1,
    ) -> None:
        self.rt = runtime
        self.admission = admission
        self.metrics = metrics
        self.stream_interval = max(1, stream_interval)

    # ---- request -> job -------------------------------------------------------------------
    def _check_model(self, name: str) -> None:
        if name not in self.rt.names:
            raise model_not_found(name, self.rt.names)

    def prepare_chat(self, req: ChatCompletionRequest) -> _Job:
        """Validate a chat request and turn it into generation requests."""
        self._check_model(req.model)
        try:
            messages = [chat_message(m) for m in req.messages]
        except ValueError as exc:
            raise bad_request(str(exc), param="messages") from exc
        tools = tool_use(req, self.rt.template, self.rt.tokenizer, self._stop_ids())
        try:
            ids = tools.encode(self.rt.template, messages)
        except (ValueError, TypeError) as exc:
            raise bad_request(
                f"messages cannot be formatted for this model: {exc}", "messages"
            ) from exc
        stops = req.stop_strings() + [s for s in self.rt.template.stop_strings if s]
        job = _Job("chat", req.model, [], stops, [""], include_usage=_usage_wanted(req))
        job.requests = self._requests(req, [ids], "messages")
        job.logprobs = logprobs_format(req, True, job.requests, self.rt.tokenizer)
        job.tools = tools
        grammar = tools.grammar or response_grammar(
            req.response_format, self.rt.tokenizer, self._stop_ids()
        )
        for gen in job.requests:
            gen.grammar = grammar
        job.prompt_tokens = len(ids)
        return job

    def prepare_completion(self, req: CompletionRequest) -> _Job:
        """Validate a completions request and turn it into generation requests."""
        self._check_model(req.model)
        prompt_ids: list[list[int]] = []
        texts: list[str] = []
        vocab = len(self.rt.tokenizer)
        for p in req.prompts():
            if isinstance(p, str):
                prompt_ids.append(self.rt.tokenizer.encode(p))
                texts.append(p)
            else:
                if any(t < 0 or t >= vocab for t in p):
                    raise bad_request(f"prompt token ids must be in [0, {vocab})", "prompt")
                prompt_ids.append(list(p))
                texts.append(self.rt.tokenizer.decode(p, skip_special_tokens=True))
        if any(not ids for ids in prompt_ids):
            raise bad_request("prompt must not be empty", "prompt")
        job = _Job(
            "completions",
            req.model,
            [],
            req.stop_strings(),
            texts,
            echo=req.echo,
            include_usage=_usage_wanted(req),
        )
        job.requests = self._requests(req, prompt_ids, "prompt")
        job.logprobs = logprobs_format(req, False, job.requests, self.rt.tokenizer)
        job.prompt_tokens = sum(len(ids) for ids in prompt_ids)
        return job

    def _requests(
        self, req: SamplingFields, prompts: list[list[int]], prompt_param: str
    ) -> list[GenerationRequest]:
        ctx = self.rt.context_length
        d = self.rt.defaults
        logprobs, prompt_logprobs = requested_logprobs(req)
        out = []
        for ids in prompts:
            if len(ids) >= ctx:
                raise bad_request(
                    f"This model's context window is {ctx} tokens, but the prompt is {len(ids)} "
                    "tokens. Shorten the prompt.",
                    prompt_param,
                    code="context_length_exceeded",
                )
            room = ctx - len(ids)
            if req.max_tokens is not None:
                if len(ids) + req.max_tokens > ctx:
                    raise bad_request(
                        f"This model's context window is {ctx} tokens, but "
                        f"{len(ids) + req.max_tokens} were requested ({len(ids)} in the prompt, "
                        f"{req.max_tokens} for the completion). "
                        "Lower max_tokens or shorten the prompt.",
                        "max_tokens",
                        code="context_length_exceeded",
                    )
                max_new = req.max_tokens
            else:
                max_new = min(room, int(d.get("max_new_tokens") or DEFAULT_MAX_TOKENS))
            for choice in range(req.n):
                out.append(
                    GenerationRequest(
                        prompt_ids=ids,
                        max_new_tokens=max_new,
                        sampling=self._sampling(req, choice),
                        stop_token_ids=frozenset()
                        if req.ignore_eos
                        else frozenset(self.rt.eos_token_ids | self.rt.template.stop_token_ids),
                        logprobs=logprobs,
                        prompt_logprobs=prompt_logprobs,
                    )
                )
        return out

    def _stop_ids(self) -> set[int]:
        """The tokens that end a reply: the model's end-of-sequence and the template's stops."""
        return self.rt.eos_token_ids | self.rt.template.stop_token_ids

    def _sampling(self, req: SamplingFields, choice: int) -> SamplingParams:
        d = self.rt.defaults
        temperature = req.temperature if req.temperature is not None else d.get("temperature", 1.0)
        if req.temperature is not None:
            do_sample = req.temperature > 0
        else:
            do_sample = bool(d.get("do_sample", True))
        top_k = req.top_k if req.top_k is not None else d.get("top_k", 0)
        return SamplingParams(
            temperature=float(temperature if temperature is not None else 1.0),
            top_p=float(req.top_p if req.top_p is not None else d.get("top_p", 1.0) or 1.0),
            top_k=max(0, int(top_k or 0)),
            repetition_penalty=float(
                req.repetition_penalty
                if req.repetition_penalty is not None
                else d.get("repetition_penalty", 1.0) or 1.0
            ),
            presence_penalty=float(req.presence_penalty or 0.0),
            frequency_penalty=float(req.frequency_penalty or 0.0),
            seed=None if req.seed is None else req.seed + choice,
            do_sample=do_sample,
        )

    # ---- running ---------------------------------------------------------------------------
    def admit(self, job: _Job) -> Slot:
        """Reserve the job's sequences or raise 429."""
        return self.admission.acquire(len(job.requests))

    async def _run_sequence(
        self, job: _Job, gen: GenerationRequest, seq: _Sequence, sink: Sink
    ) -> None:
        decoder = IncrementalDecoder(self.rt.tokenizer)
        matcher = StopMatcher(job.stops)
        steps = self.rt.engine.generate(gen)
        pending: list[str] = []
        last = None
        ttft, itl = self.metrics.ttft.labels(job.model), self.metrics.itl.labels(job.model)
        try:
            async for step in steps:
                t = time.perf_counter()
                if step.prompt_logprobs is not None:
                    seq.prompt_logprobs = step.prompt_logprobs
                if step.logprob is not None:
                    seq.logprobs.append(step.logprob)
                if step.token_id is not None:
                    if seq.completion_tokens == 0:
                        ttft.observe(t - job.started)
                    elif last is not None:
                        itl.observe(t - last)
                    last = t
                    seq.completion_tokens += 1
                    pending.append(matcher.feed(decoder.push(step.token_id)))
                    if matcher.stopped:
                        seq.finish_reason = "stop"
                        break
                if step.finish_reason is not None:
                    pending.append(matcher.feed(decoder.flush()))
                    pending.append(matcher.flush())
                    seq.finish_reason = "stop" if matcher.stopped else step.finish_reason
                    break
                if seq.completion_tokens % self.stream_interval == 0 and any(pending):
                    await sink(seq, "".join(pending), False)
                    pending.clear()
            else:
                seq.finish_reason = seq.finish_reason or "stop"
        finally:
            await steps.aclose()
        await sink(seq, "".join(pending), True)

    async def _run_all(self, job: _Job, sink: Sink) -> list[_Sequence]:
        seqs = [_Sequence(i, len(g.prompt_ids)) for i, g in enumerate(job.requests)]
        tasks = [
            asyncio.create_task(self._run_sequence(job, g, s, sink))
            for g, s in zip(job.requests, seqs, strict=True)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                # tokens are work done, also for a request cancelled or failed midway (its
                # prompt counts once it was prefilled, which the first token shows)
                completion = sum(s.completion_tokens for s in seqs)
                if completion:
                    self.metrics.prompt_tokens.labels(job.model).inc(job.prompt_tokens)
                self.metrics.completion_tokens.labels(job.model).inc(completion)
        self.metrics.e2e.labels(job.model).observe(time.perf_counter() - job.started)
        return seqs

    @staticmethod
    def usage(job: _Job, seqs: list[_Sequence]) -> dict[str, int]:
        """OpenAI usage: prompt tokens counted once per prompt, completion tokens over choices."""
        prompt = job.prompt_tokens
        completion = sum(s.completion_tokens for s in seqs)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def complete(self, job: _Job) -> dict[str, Any]:
        """Run a job to the end and build the non-streaming response body."""

        async def collect(seq: _Sequence, text: str, final: bool) -> None:
            seq.text.append(text)

        try:
            seqs = await self._run_all(job, collect)
        except EngineError as exc:
            raise generation_failed(exc) from exc
        return response_body(job, seqs, self.usage(job, seqs))

    async def stream(self, job: _Job, keepalive_seconds: float | None = None) -> AsyncIterator[str]:
        """Run a job and yield its server-sent events, ending with :data:`DONE_EVENT`; after each
        ``keepalive_seconds`` without an event (waiting for a slot in a busy engine) it yields
        :data:`KEEPALIVE`, so that no proxy's idle timeout cuts a healthy stream."""
        chunks = StreamChunks(job.response_id(), job.chat, now(), job.model, job.include_usage)
        queue: asyncio.Queue[tuple[_Sequence, str, bool] | str | None] = asyncio.Queue()

        async def push(seq: _Sequence, text: str, final: bool) -> None:
            await queue.put((seq, text, final))

        runner = asyncio.create_task(self._run_all(job, push))
        runner.add_done_callback(lambda _: queue.put_nowait(None))
        silence = _SilenceWatch(queue, keepalive_seconds) if keepalive_seconds else None
        try:
            for i in range(len(job.requests)):
                if (event := chunks.opening(i, job.echoed(i))) is not None:
                    yield event
            while (item := await queue.get()) is not None:
                if item is KEEPALIVE:
                    yield KEEPALIVE
                    continue
                if silence is not None:
                    silence.heard()
                seq, text, final = item
                if text or final:
                    finish = seq.finish_reason if final else None
                    logprobs = job.logprobs.delta(seq) if job.logprobs else None
                    if job.tools is not None and job.tools.format:
                        for event in job.tools.stream_events(
                            chunks, seq.index, text, finish, logprobs
                        ):
                            yield event
                    else:
                        yield chunks.delta(seq.index, text, finish, logprobs)
            seqs = await runner  # raises what the engine raised
            if job.include_usage:
                yield chunks.event([], self.usage(job, seqs))
        except (EngineError, OpenAIError) as exc:
            err = exc if isinstance(exc, OpenAIError) else generation_failed(exc)
            job.error = err
            yield error_event(err.body())
        finally:
            if silence is not None:
                silence.stop()
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
        yield DONE_EVENT


def generation_failed(exc: EngineError) -> OpenAIError:
    """The 500 for a failed generation (a stream under way ends with it as its error event)."""
    return OpenAIError(500, f"generation failed: {exc}", code="generation_failed")


def response_body(job: _Job, seqs: list[_Sequence], usage: dict[str, int]) -> dict[str, Any]:
    """The body of a non-streamed answer: a ``chat.completion`` (each choice's text as the
    assistant's message) or a ``text_completion`` (the text, after the prompt if echoed)."""
    choices = []
    for s in seqs:
        text = "".join(s.text)
        choice: dict[str, Any] = {
            "index": s.index,
            "finish_reason": s.finish_reason,
            "logprobs": job.logprobs.body(s) if job.logprobs else None,
        }
        if job.chat:
            choice["message"], called = (job.tools or ToolUse(None, None)).message(text)
            if called:
                choice["finish_reason"] = "tool_calls"
        else:
            choice["text"] = (job.echoed(s.index) or "") + text
        choices.append(choice)
    return {
        "id": job.response_id(),
        "object": "chat.completion" if job.chat else "text_completion",
        "created": now(),
        "model": job.model,
        "choices": choices,
        "usage": usage,
    }


class _SilenceWatch:
    """Puts :data:`KEEPALIVE` on a stream's queue whenever ``every`` seconds pass without
    :meth:`heard`. One timer per ``every`` seconds and nothing per event: a timeout on each wait
    for the next event (a task and a timer per token) took a seventh of the worker's event-loop
    time per streamed token."""

    def __init__(self, queue: asyncio.Queue, every: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._every = every
        self._last = self._loop.time()
        self._timer = self._loop.call_later(every, self._check)

    def heard(self) -> None:
        """An event went out now."""
        self._last = self._loop.time()

    def _check(self) -> None:
        silent = self._loop.time() - self._last
        if silent >= self._every:
            self._queue.put_nowait(KEEPALIVE)
            self.heard()
            silent = 0.0
        self._timer = self._loop.call_later(self._every - silent, self._check)

    def stop(self) -> None:
        """No more keep-alives."""
        self._timer.cancel()


def _usage_wanted(req: SamplingFields) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)
