"""What the chat page talks to: live workers found by discovery, picked by the router, reached
through the gateway's upstream (retries before the first byte), answers streamed as text."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from kubechat.cold_start import ColdStarts
from kubechat.discovery.live import LiveView
from kubechat.openai_errors import OpenAIError, model_not_found
from kubechat.routing import Router
from kubechat.upstream import Buffered, RetryPolicy, Timeouts, Upstream

STARTING = (
    "⏳ The model is starting (it was scaled to zero): the answer follows as soon as its "
    "worker is ready."
)


class ChatError(Exception):
    """A reply that could not be produced, with a message fit for the chat window.

    ``too_long``: the worker refused the conversation as longer than the model's context window
    (dropping older turns may help).
    """

    def __init__(self, message: str, *, too_long: bool = False) -> None:
        super().__init__(message)
        self.too_long = too_long


@dataclass
class Params:
    """Sampling controls of the page."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    context_length: int | None = None  # the model's window, when the worker says (not sent)


@dataclass
class ReplyStats:
    """Figures shown under a reply."""

    tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    worker: str = ""
    finish_reason: str | None = None

    def line(self) -> str:
        """``42 tokens · 85.3 tokens/s · first token 0.12 s · 0.61 s``."""
        rate = self.tokens / self.total_s if self.total_s > 0 else 0.0
        parts = [f"{self.tokens} tokens", f"{rate:.1f} tokens/s"]
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        parts.append(f"{self.total_s:.2f} s")
        if self.finish_reason == "length":
            parts.append("cut at max tokens")
        return " · ".join(parts)


@dataclass
class Reply:
    """A reply as it grows: text so far and its figures."""

    text: str = ""
    stats: ReplyStats = field(default_factory=ReplyStats)


class ChatBackend:
    """Models and streamed chat completions over the live workers of ``view``."""

    def __init__(
        self,
        view: LiveView,
        policy: RetryPolicy | None = None,
        cold_starts: ColdStarts | None = None,
    ) -> None:
        """``cold_starts``: how a question for an autoscaled model with no worker running
        waits for one (None: it gets the no-worker error at once)."""
        self.view = view
        self.cold_starts = cold_starts
        self.router = Router(view)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=30.0)
        )
        # the gateway's lease watchdog too: a frozen worker's reply ends instead of hanging
        self.upstream = Upstream(
            policy=policy or RetryPolicy(),
            timeouts=Timeouts(connect=5.0, read=300.0),
            lease_check=view.lost,
        )

    def models(self) -> list[str]:
        """Names served by live workers now, and those of autoscaled deployments (a question
        for one at zero workers starts one)."""
        autoscaled = self.cold_starts.models() if self.cold_starts else []
        return sorted({*self.view.models(), *autoscaled})

    async def defaults(self, model: str) -> Params:
        """The model's generation defaults, read from one of its workers (fallback: ours)."""
        worker = self.router.pick(model)
        params = Params()
        if worker is None:
            return params
        try:
            r = await self.client.get(worker.address.rstrip("/") + "/v1/models", timeout=5)
            entry = next(m for m in r.json()["data"] if m["id"] == model)
            d = entry.get("generation_defaults") or {}
        except (httpx.HTTPError, ValueError, KeyError, StopIteration):
            return params
        if d.get("temperature") is not None:
            params.temperature = float(d["temperature"])
        if d.get("top_p") is not None:
            params.top_p = float(d["top_p"])
        if d.get("max_tokens"):
            params.max_tokens = int(d["max_tokens"])
        if d.get("context_length"):
            params.context_length = int(d["context_length"])
        return params

    async def stream(
        self, model: str, messages: list[dict[str, str]], params: Params
    ) -> AsyncIterator[Reply]:
        """Yield the reply as it grows; raises ChatError with a readable message."""
        # the gateway's rule: a name no worker record ever carried is not found (404), while a
        # known model without a live worker now is unavailable (503: it may come back)
        cold = self.cold_starts
        autoscaled = cold is not None and cold.deployment_for(model) is not None
        if model not in self.view.known_models() and not autoscaled:
            raise ChatError(model_not_found(model, self.models()).message)
        if cold is not None and cold.starting(model):
            yield Reply(text=STARTING)  # shown until the first token replaces it
            try:
                await cold.wait(model)
            except OpenAIError as exc:
                raise _chat_error(exc.status, exc.message) from exc
        body = {
            "model": model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        reply = Reply()
        try:
            result = await self.upstream.send(
                model=model,
                path="/v1/chat/completions",
                body=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
                stream=True,
                pick=lambda tried: self.router.pick(model, tried),
                track=lambda worker: self.router.track(worker).release,
            )
        except OpenAIError as exc:
            raise _chat_error(exc.status, exc.message) from exc
        if isinstance(result, Buffered):
            raise _chat_error(result.status, _error_message(result.body))
        reply.stats.worker = result.headers.get("x-kubechat-worker", "")
        async with result:  # closes the worker connection even if the page stops reading
            buffer = b""
            async for chunk in result.chunks:
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    for line in event.decode("utf-8", "replace").splitlines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        data = json.loads(line[6:])
                        if "error" in data:
                            message = data["error"].get("message", "the worker failed")
                            raise ChatError(f"The reply broke off: {message}")
                        if data.get("usage"):
                            reply.stats.tokens = data["usage"]["completion_tokens"]
                        for choice in data.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content") or ""
                            if choice.get("finish_reason"):
                                reply.stats.finish_reason = choice["finish_reason"]
                            if piece:
                                if reply.stats.first_token_s is None:
                                    reply.stats.first_token_s = time.perf_counter() - started
                                reply.text += piece
                                reply.stats.total_s = time.perf_counter() - started
                                yield reply
        reply.stats.total_s = time.perf_counter() - started
        yield reply

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()
        await self.upstream.aclose()


def _error_message(body: bytes) -> str:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:300]


def _chat_error(status: int, message: str) -> ChatError:
    if status == 503:
        return ChatError(
            f"No worker is available for this model right now ({message}). Try again shortly."
        )
    if status == 429:
        return ChatError("Every worker for this model is busy. Try again in a moment.")
    if status == 400 and "context window" in message:
        return ChatError(
            f"The conversation is too long for this model: {message} Clear the chat.",
            too_long=True,
        )
    return ChatError(f"Error {status}: {message}")
