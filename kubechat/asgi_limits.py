"""Request limits as plain ASGI middleware, shared by the worker and the gateway.

Plain ASGI (no web framework imports) so that core can hold it: a body over the limit is answered
413, and request headers over theirs 431, in OpenAI's error format before any parsing or
buffering happens.
"""

from __future__ import annotations

from typing import Any

from .openai_errors import OpenAIError, error_response


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before anything parses it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(
                        f"request body is larger than the limit of {self.limit} bytes"
                    )
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: dict, receive: Any, send: Any) -> None:
        err = OpenAIError(
            413,
            f"request body is larger than the limit of {self.limit} bytes",
            code="request_too_large",
        )
        await error_response(err)(scope, receive, send)


class HeaderLimit:
    """ASGI middleware: request headers over ``limit`` bytes in all get 431.

    The HTTP server already refuses header blocks it cannot buffer; this bounds what the
    application accepts to a size like common proxies' (nginx allows 32 KiB by default).
    """

    def __init__(self, app: Any, limit: int = 32 * 1024) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])
            if size > self.limit:
                err = OpenAIError(
                    431,
                    f"request headers are larger than the limit of {self.limit} bytes",
                    code="headers_too_large",
                )
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """A chunked body went over the limit while being read (``BodyLimit`` answers it 413)."""


def http_error(exc: Any) -> OpenAIError:
    """An OpenAIError for a framework HTTP exception (404 path, 405 method, body read errors)."""
    if isinstance(exc.__cause__, BodyTooLarge):
        return OpenAIError(413, str(exc.__cause__), code="request_too_large")
    status = int(getattr(exc, "status_code", 500))
    detail = getattr(exc, "detail", None) or "error"
    return OpenAIError(status, str(detail), headers=dict(getattr(exc, "headers", None) or {}))
