"""Errors in the shape OpenAI's API returns them, shared by the worker and the gateway.

Every HTTP error kubechat answers is ``{"error": {"message", "type", "param", "code"}}`` with the
true status code: 400 for a bad parameter, 404 for an unknown model, 429 when full, 503 while
loading or when no worker is live, 500 with a message for internal failures.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


@dataclass
class OpenAIError(Exception):
    """An error answered to a client as OpenAI error JSON with ``status``."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.type is None:
            self.type = _TYPES.get(
                self.status, "server_error" if self.status >= 500 else "invalid_request_error"
            )

    def body(self) -> dict:
        """The JSON body: ``{"error": {...}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


ASGIResponse = Callable[[dict, Any, Any], Awaitable[None]]


def error_response(err: OpenAIError) -> ASGIResponse:
    """``err`` as an HTTP response: its JSON body with its status and headers, as a plain ASGI
    app (so core needs no web framework). FastAPI's exception handlers return it, middleware and
    plain ASGI endpoints call it with ``(scope, receive, send)``."""
    # rendered as Starlette's JSONResponse renders, so every error of ours reads the same
    body = json.dumps(err.body(), ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()),
    ]

    async def respond(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    """400: the request itself is wrong."""
    return OpenAIError(400, message, param=param, code=code)


def model_not_found(model: str, available: list[str]) -> OpenAIError:
    """404: no model of that name is served here."""
    served = ", ".join(available) if available else "none"
    return OpenAIError(
        404,
        f"The model '{model}' does not exist or is not served here (served: {served}).",
        param="model",
        code="model_not_found",
    )


def overloaded(message: str, retry_after: float = 1.0) -> OpenAIError:
    """429: every slot is taken; the client should retry after a while."""
    return OpenAIError(
        429,
        message,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def unavailable(message: str, retry_after: float = 2.0, code: str | None = None) -> OpenAIError:
    """503: not able to serve now (loading, draining, no live worker)."""
    return OpenAIError(
        503, message, code=code, headers={"Retry-After": str(max(1, round(retry_after)))}
    )


def validation_error(errors: list[dict]) -> OpenAIError:
    """A 400 naming the first invalid field, from pydantic's (or FastAPI's) ``errors()`` list."""
    if not errors:
        return OpenAIError(400, "invalid request")
    # A value that matches no member of a union yields one error per member; our own checks
    # (value errors) say more than "Input should be a valid string" from another member.
    first = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    if first.get("type") == "json_invalid":
        return OpenAIError(400, f"request body is not valid JSON: {first.get('msg')}")
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_tag(p)]
    param = ".".join(loc) or None
    if param is None and first.get("type") in _NOT_AN_OBJECT:
        return OpenAIError(
            400,
            "the request body must be a JSON object, sent with Content-Type: application/json",
        )
    msg = first.get("msg", "invalid value")
    if param:
        msg = f"{param}: {msg}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return OpenAIError(400, msg, param=param)


_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "constrained-str"}


def _union_tag(part: object) -> bool:
    """Whether a pydantic error location part names a union member (``str``,
    ``list[TextPart]``, ``function-after[...]``) rather than a field or an index."""
    if not isinstance(part, str):
        return False
    return part in _TYPE_TAGS or "[" in part or part.startswith("function-")
