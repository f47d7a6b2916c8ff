"""A small streaming load client for OpenAI-compatible chat endpoints.

Each request streams a chat completion with ``max_tokens`` output tokens (``ignore_eos`` keeps
kubechat and vLLM from stopping early) and ``stream_options.include_usage`` so the token count is
the server's own. A run keeps ``concurrency`` requests in flight until ``requests`` are done and
reports output tokens/s, time to first token, inter-token latency and errors.

It runs on the machine it measures, so its own CPU comes out of the servers' share: it reads the
stream with aiohttp (C-accelerated HTTP parser), which costs about a third of httpx's CPU per
streamed chunk (55-75 us against 135-210 us at 32 streams, measured over benchmarks/fake_worker.py).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class RequestResult:
    """One request: when its first and later content chunks arrived, and how it ended."""

    ok: bool
    ttft: float | None = None
    chunk_gaps: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None


@dataclass
class RunResult:
    """A run at one concurrency."""

    concurrency: int
    seconds: float
    results: list[RequestResult]

    @property
    def errors(self) -> int:
        """Requests that did not complete."""
        return sum(not r.ok for r in self.results)

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens of completed requests per wall-clock second."""
        return sum(r.output_tokens for r in self.results if r.ok) / self.seconds

    def ttft(self, q: float) -> float:
        """The ``q`` quantile (0..1) of time to first token, seconds."""
        return quantile([r.ttft for r in self.results if r.ok and r.ttft is not None], q)

    def itl_p50(self) -> float:
        """Median gap between content chunks, seconds."""
        return quantile([g for r in self.results if r.ok for g in r.chunk_gaps], 0.5)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[
        min(98, max(0, int(q * 100) - 1))
    ]


def prompts(n: int) -> list[str]:
    """``n`` different short questions (so no two requests are the same prompt)."""
    topics = [
        "mountains",
        "rivers",
        "deserts",
        "oceans",
        "forests",
        "islands",
        "lakes",
        "volcanoes",
    ]
    return [f"Tell me about {topics[i % len(topics)]}, part {i}." for i in range(n)]


async def one_request(
    client: aiohttp.ClientSession,
    url: str,
    model: str,
    prompt: str,
    max_tokens: int,
    ignore_eos: bool = True,
    extra: dict | None = None,
) -> RequestResult:
    """Stream one chat completion and time it (``ignore_eos``: vLLM's and kubechat's extension,
    refused by servers that do not know it; ``extra``: more body fields, such as logprobs)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(extra or {})
    started = time.perf_counter()
    last = None
    result = RequestResult(ok=False)
    try:
        async with client.post(f"{url}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                detail = (await r.read())[:200].decode("utf-8", "replace")
                result.error = f"HTTP {r.status}: {detail}"
                return result
            async for raw in r.content:  # one line at a time
                if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                    continue
                event = json.loads(raw[6:])
                if "error" in event:
                    result.error = event["error"].get("message", "error event")
                    return result
                if event.get("usage"):
                    result.output_tokens = event["usage"]["completion_tokens"]
                if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - started
                    else:
                        result.chunk_gaps.append(now - last)
                    last = now
        if not result.output_tokens:  # no usage in the stream: one chunk per token
            result.output_tokens = len(result.chunk_gaps) + (result.ttft is not None)
        result.ok = True
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run(
    url: str,
    model: str,
    *,
    concurrency: int,
    requests: int,
    max_tokens: int,
    ignore_eos: bool = True,
    extra: dict | None = None,
) -> RunResult:
    """Keep ``concurrency`` requests in flight until ``requests`` have finished (each body with
    the fields of ``extra`` added)."""
    # like httpx's Timeout(300): per connect and per read, not for the whole stream
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=300, sock_read=300)
    texts = prompts(requests)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)
    results: list[RequestResult] = []

    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def user() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                results.append(
                    await one_request(client, url, model, prompt, max_tokens, ignore_eos, extra)
                )

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return RunResult(concurrency, seconds, results)
