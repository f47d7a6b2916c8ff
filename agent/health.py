"""The agent's own health endpoints, for the kubelet's probes and ``kubechat up``.

``GET /health`` answers 200 while the agent runs. ``GET /health/ready`` answers 200 once the
gateway can route to the engine: the agent has published a ready lease and is not draining (503
otherwise), as ``kubechat worker``'s endpoint of the same name. A plain asyncio server: two
fixed answers need no web framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


async def serve_health(host: str, port: int, ready: Callable[[], bool]) -> asyncio.AbstractServer:
    """Start answering on ``host:port``; ``ready()`` decides ``/health/ready``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = request.split(b" ", 2)
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if path == b"/health":
                status = 200
            elif path == b"/health/ready":
                status = 200 if ready() else 503
            else:
                status = 404
            body = (b'{"ready":true}' if status == 200 else b'{"ready":false}') + b"\n"
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
