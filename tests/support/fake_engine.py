"""An in-process engine that emits scripted tokens: serving, the API and anything above the
engine can be tested without a model.

It implements ``worker/engine.py``'s ``Engine`` as an engine must: each step is one token id,
a stop token ends the sequence with ``token_id`` None and finish reason "stop", the
``max_new_tokens``-th token ends it with "length", and closing the step iterator cancels the
request. What it emits is a script: a function from the request to token ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from kubechat.worker.engine import Engine, EngineError, EngineStats, GenerationRequest, Step

Script = Callable[[GenerationRequest], Sequence[int]]


class ScriptedEngine(Engine):
    """Answers every request with ``script(request)``'s token ids, one step each ``delay``
    seconds. ``fail_after``: raise EngineError after that many tokens (a crashing engine).

    What a test checks afterwards: ``requests`` (every request received), ``finished`` (ran to
    a finish reason) and ``cancelled`` (closed before that), ``running`` now.
    """

    path = "scripted"

    def __init__(
        self,
        script: Script,
        *,
        delay: float = 0.0,
        capacity: int = 8,
        fail_after: int | None = None,
    ) -> None:
        self.script = script
        self.delay = delay
        self.capacity = capacity
        self.fail_after = fail_after
        self.requests: list[GenerationRequest] = []
        self.running = 0
        self.finished = 0
        self.cancelled = 0

    def stats(self) -> EngineStats:
        """Sequences being generated now, against the capacity."""
        return EngineStats(running=self.running, queued=0, capacity=self.capacity)

    async def start(self) -> None:
        """Nothing runs in the background."""

    async def stop(self) -> None:
        """Nothing runs in the background."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[Step]:
        """The request's scripted steps."""
        self.requests.append(request)
        return self._steps(request, list(self.script(request)))

    async def _steps(self, request: GenerationRequest, tokens: list[int]) -> AsyncIterator[Step]:
        self.running += 1
        done = False
        try:
            for count, token in enumerate(tokens, start=1):
                await asyncio.sleep(self.delay)
                if self.fail_after is not None and count > self.fail_after:
                    raise EngineError("scripted failure")
                if token in request.stop_token_ids:
                    done = True
                    yield Step(None, "stop")
                    return
                if count >= request.max_new_tokens:
                    done = True
                    yield Step(token, "length")
                    return
                yield Step(token)
            done = True  # the script ran out: the model stopped on its own
            yield Step(None, "stop")
        finally:
            self.running -= 1
            if done:
                self.finished += 1
            else:
                self.cancelled += 1
