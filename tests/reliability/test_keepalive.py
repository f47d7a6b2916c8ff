"""SSE keep-alive comments on streams that wait (a busy serial engine runs one at a time)."""

from __future__ import annotations

import asyncio
import time

from kubechat.worker.api import KEEPALIVE, with_keepalive


async def test_a_silent_stream_gets_comments_and_its_events_unchanged() -> None:
    closed = asyncio.Event()

    async def slow():
        try:
            yield "data: 1\n\n"
            await asyncio.sleep(0.35)
            yield "data: 2\n\n"
        finally:
            closed.set()

    got = [(e, time.monotonic()) async for e in with_keepalive(slow(), 0.1)]
    events = [e for e, _ in got]
    assert [e for e in events if e != KEEPALIVE] == ["data: 1\n\n", "data: 2\n\n"]
    assert 2 <= events.count(KEEPALIVE) <= 4
    assert KEEPALIVE.startswith(":")  # an SSE comment: clients skip it
    assert closed.is_set()


async def test_closing_the_stream_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                await asyncio.sleep(10)
                yield "never"
        finally:
            closed.set()

    stream = with_keepalive(endless(), 0.05)
    assert await anext(stream) == KEEPALIVE
    await stream.aclose()
    assert closed.is_set()
