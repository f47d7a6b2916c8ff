"""The response that relays a worker's stream to the client and always lets go of it."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from kubechat.upstream import Streaming


class RelayResponse(StreamingResponse):
    """Streams ``stream.chunks`` to the client; ``on_end()`` runs once the response is over,
    ``on_crash()`` first if it broke off by an error of the gateway's own.

    However the response ends (finished, the client gone, even before the first byte was sent,
    cancelled at shutdown), the upstream stream is closed, so its worker connection is closed and
    its in-flight count released.
    """

    def __init__(
        self, stream: Streaming, on_end: Callable[[], None], on_crash: Callable[[], None]
    ) -> None:
        headers = {k: v for k, v in stream.headers.items() if k.lower() != "content-type"}
        super().__init__(
            stream.chunks,
            status_code=stream.status,
            headers=headers,
            media_type=stream.headers.get("content-type", "text/event-stream"),
        )
        self.stream = stream
        self.on_end = on_end
        self.on_crash = on_crash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream, then close it whatever happened."""
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:  # the client left: not a failure of ours
            raise
        except Exception:
            self.on_crash()
            raise
        finally:
            await self.stream.aclose()
            self.on_end()
