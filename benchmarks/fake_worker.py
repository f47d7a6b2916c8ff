"""A worker stand-in that costs almost no CPU, to measure what the gateway itself spends.

    python benchmarks/fake_worker.py PORT LEASE_DIR [--interval 0.02] [--model bench]

Serves ``/v1/chat/completions``: a streamed answer of ``max_tokens`` content chunks, one every
``--interval`` seconds, shaped like a real worker's (then a finish chunk with usage and
``[DONE]``); non-streamed requests get one complete answer. It publishes its lease into
LEASE_DIR (renewed far into the future) so a gateway on the same local store routes to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from aiohttp import web

from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord


def _event(body: dict) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


def app(model: str, interval: float) -> web.Application:
    """The stand-in's routes."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        if not body.get("stream"):
            message = {"role": "assistant", "content": " tok" * n}
            return web.json_response(
                {
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
                }
            )
        base = {"id": "fake", "object": "chat.completion.chunk", "created": 0, "model": model}
        token = _event(
            base | {"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
        )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(n):
            await response.write(token)
            await asyncio.sleep(interval)
        finish = base | {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
        }
        await response.write(_event(finish) + b"data: [DONE]\n\n")
        return response

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_get("/health/ready", ready)
    return application


def main() -> int:
    """Publish the lease, then serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("lease_dir", type=Path)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between chunks")
    parser.add_argument("--model", default="bench")
    args = parser.parse_args()
    LocalLeaseStore(args.lease_dir).publish(
        WorkerRecord(
            name=f"fake-{args.port}",
            deployment="fake",
            models=(args.model,),
            address=f"http://127.0.0.1:{args.port}",
            ready=True,
            draining=False,
            in_flight=0,
            queued=0,
            capacity=100_000,
            renew_time=time.time() + 24 * 3600,
            lease_duration=6.0,
        )
    )
    web.run_app(
        app(args.model, args.interval),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
