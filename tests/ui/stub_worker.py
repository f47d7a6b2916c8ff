"""A worker stand-in for the chat page's tests: one OpenAI-style app serving several models,
each answering in one scripted way, and recording the chat requests it receives.

Models: ``stub-echo`` streams back what it was asked; ``stub-busy`` answers 429;
``stub-broken`` sends one piece and then an error event; ``stub-short`` has a context window of
``SHORT_CONTEXT`` characters and refuses longer conversations like a real worker does;
``stub-slow`` streams a word every 50 ms until its client goes away, then counts that in
``app.state.dropped``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kubechat.discovery.records import WorkerRecord

MODELS = ("stub-broken", "stub-busy", "stub-echo", "stub-short", "stub-slow")
SHORT_CONTEXT = 120
DEFAULTS = {"temperature": 0.3, "top_p": 0.85, "max_tokens": 99, "context_length": 512}


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "x", "object": "chat.completion.chunk", "model": model, "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n"


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status)


async def _endless(app: FastAPI, model: str) -> AsyncIterator[str]:
    try:
        count = 0
        while True:
            count += 1
            yield _chunk(model, {"content": f"word{count} "})
            await asyncio.sleep(0.05)
    finally:
        app.state.dropped += 1


def stub_app() -> FastAPI:
    """The stand-in; ``app.state.requests`` lists the chat request bodies received."""
    app = FastAPI()
    app.state.requests = []
    app.state.dropped = 0

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": m, "object": "model", "owned_by": "stub", "generation_defaults": DEFAULTS}
            for m in MODELS
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        model = body["model"]
        messages = body["messages"]
        if model == "stub-busy":
            return _error(429, "the worker is full", "overloaded")
        if model == "stub-short":
            size = sum(len(m["content"]) for m in messages)
            if size > SHORT_CONTEXT:
                return _error(
                    400,
                    f"This model's context window is {SHORT_CONTEXT} tokens, but the prompt is "
                    f"{size} tokens. Shorten the prompt.",
                    "context_length_exceeded",
                )
        if model == "stub-slow":
            return StreamingResponse(_endless(app, model), media_type="text/event-stream")
        answer = f"You said: {messages[-1]['content']} ({len(messages)} messages)"
        words = answer.split(" ")

        async def events():
            yield _chunk(model, {"role": "assistant", "content": ""})
            for i, word in enumerate(words):
                yield _chunk(model, {"content": word if i == 0 else " " + word})
                if model == "stub-broken":
                    error = {"error": {"message": "the worker lost its GPU", "code": "internal"}}
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                await asyncio.sleep(0.01)
            yield _chunk(model, {}, "stop")
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 0}
            done = {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield f"data: {json.dumps(done)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def stub_record(name: str, address: str) -> WorkerRecord:
    """A live heartbeat for the stand-in at ``address``, fresh for an hour."""
    return WorkerRecord(
        name=name,
        deployment="stub",
        models=MODELS,
        address=address,
        ready=True,
        draining=False,
        in_flight=0,
        queued=0,
        capacity=8,
        renew_time=time.time(),
        lease_duration=3600,
    )
