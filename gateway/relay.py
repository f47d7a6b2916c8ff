"""The response that relays a worker's stream to the client and always lets go of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kubechat.upstream import Streaming


class RelayResponse(Response):
    """Streams ``stream.chunks`` to the client; ``on_end()`` runs once the response is over,
    ``on_crash()`` first if it broke off by an error of the gateway's own.

    However the response ends (finished, the client gone, even before the first byte was sent,
    cancelled at shutdown), the upstream stream is closed, so its worker connection is closed and
    its in-flight count released.

    Plain ASGI rather than Starlette's ``StreamingResponse``, whose task group (one to stream,
    one to listen for the client leaving) cost more gateway CPU than the relay itself. Here the
    stream is sent from the request's own task, and one small task waits for the client to
    leave and then cancels it.
    """

    def __init__(
        self, stream: Streaming, on_end: Callable[[], None], on_crash: Callable[[], None]
    ) -> None:
        headers = {k: v for k, v in stream.headers.items() if k.lower() != "content-type"}
        self.status_code = stream.status
        self.media_type = stream.headers.get("content-type", "text/event-stream")
        self.background = None
        self.init_headers(headers)  # before ``body`` exists: no content-length for a stream
        self.stream = stream
        self.on_end = on_end
        self.on_crash = on_crash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream, then close it whatever happened."""
        me = asyncio.current_task()
        left = asyncio.Event()
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, me, left))
        try:
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            async for chunk in self.stream.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # cancelled by the watcher alone: the client left, which is not a failure of ours
            if not left.is_set() or me.uncancel() > 0:
                raise
        except Exception:
            self.on_crash()
            raise
        finally:
            watcher.cancel()
            await self.stream.aclose()
            self.on_end()


async def _cancel_when_gone(receive: Receive, task: asyncio.Task, left: asyncio.Event) -> None:
    """Wait for the client to disconnect, then cancel ``task`` (the one sending the stream)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the server cannot tell any more: nothing to cancel for
        return
    left.set()
    task.cancel()
