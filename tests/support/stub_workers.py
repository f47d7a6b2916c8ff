"""Worker stand-ins for gateway tests: each answers the OpenAI endpoints in one scripted way.

They let the gateway's failure handling be exercised deterministically (429, 503, hangs, streams
that die half-way); the real worker is covered end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.processes import free_port, until


def stub_app(behaviour: str, name: str) -> FastAPI:
    """A worker stand-in: ok | busy | draining | hang | die_mid_stream | slow_stream | endless |
    slow_headers | stall.

    ``endless`` streams until its client goes away and then sets ``app.state.closed``;
    ``slow_headers`` answers after 0.5 s, a stream then being ``endless``; ``stall`` sends the
    role chunk, then only SSE keep-alive comments (as a frozen real worker's stream looks to a
    gateway that only watches bytes), and sets ``app.state.closed`` when its client goes away.
    """
    app = FastAPI()
    app.state.hits = 0
    app.state.closed = threading.Event()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.hits += 1
        body = await request.json()
        if behaviour == "busy":
            return JSONResponse(
                {"error": {"message": "full", "type": "rate_limit_error"}},
                status_code=429,
                headers={"Retry-After": "1"},
            )
        if behaviour == "draining":
            return JSONResponse(
                {"error": {"message": "draining", "code": "draining"}}, status_code=503
            )
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "slow_headers":
            await asyncio.sleep(0.5)
        if not body.get("stream"):
            return {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"from {name}"},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }

        async def endless():
            try:
                while True:
                    chunk = {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": {"content": "."}, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.02)
            finally:
                app.state.closed.set()

        async def stall():
            try:
                role = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}
                    ],
                }
                yield f"data: {json.dumps(role)}\n\n"
                while True:
                    await asyncio.sleep(0.2)
                    yield ": keep-alive\n\n"
            finally:
                app.state.closed.set()

        if behaviour == "stall":
            return StreamingResponse(stall(), media_type="text/event-stream")
        if behaviour in ("endless", "slow_headers"):
            return StreamingResponse(endless(), media_type="text/event-stream")

        async def events():
            pieces = ["from", " ", name]
            for i, piece in enumerate(pieces):
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
                if behaviour == "die_mid_stream" and i == 0:
                    await asyncio.sleep(0.1)
                    raise RuntimeError("worker died")  # uvicorn drops the connection
                await asyncio.sleep(0.3 if behaviour == "slow_stream" else 0.01)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextlib.contextmanager
def serve(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="error", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, 10, 0.01, "the stub server starting")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
