"""Small asyncio helpers shared by the HTTP roles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until_disconnect(
    work: Awaitable[T], is_disconnected: Callable[[], Awaitable[bool]], poll: float = 0.25
) -> T | None:
    """Await ``work`` unless the client goes away first: then cancel it and return None.

    Used for non-streaming requests, where nothing else notices a client that hung up.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
