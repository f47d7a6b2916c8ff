"""The gateway's HTTP API: one OpenAI-compatible endpoint over every live worker."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubechat.aio import until_disconnect
from kubechat.discovery.live import LiveView
from kubechat.openai_errors import OpenAIError, bad_request, model_not_found
from kubechat.routing import Router

from .auth import KeyChecker
from .metrics import GatewayMetrics
from .upstream import Buffered, RetryPolicy, Upstream

log = logging.getLogger(__name__)

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
_PASS_HEADERS = ("content-type", "accept", "openai-organization", "x-request-id")


@dataclass
class GatewayConfig:
    """Settings of the gateway (flags of ``kubechat gateway``)."""

    api_keys: list[str] = field(default_factory=list)
    protect_metrics: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    connect_timeout: float = 5.0
    upstream_timeout: float = 600.0  # longest silence from a worker mid-response
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def create_app(
    view: LiveView,
    router: Router,
    config: GatewayConfig | None = None,
    *,
    lifespan_hooks: list | None = None,
) -> FastAPI:
    """Build the gateway app over a discovery view and a router."""
    config = config or GatewayConfig()
    keys = KeyChecker(config.api_keys)
    metrics = GatewayMetrics()
    metrics.watch_discovery(
        lambda: {m: len(view.workers(m)) for m in view.models()},
        router.in_flight,
    )
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.upstream_timeout,
            write=30.0,
            pool=config.connect_timeout,
        )
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with contextlib.AsyncExitStack() as stack:
            for hook in lifespan_hooks or []:
                await stack.enter_async_context(hook())
            client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
            )
            state["upstream"] = Upstream(client, metrics, config.retry)
            yield

    app = FastAPI(title="kubechat gateway", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        err = OpenAIError(500, f"internal error: {type(exc).__name__}")
        return JSONResponse(err.body(), status_code=500)

    def authenticate(request: Request) -> None:
        if not keys.allows({k.lower(): v for k, v in request.headers.items()}):
            raise OpenAIError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Alive; also says how many models have a live worker."""
        return {"status": "ok", "models": view.models()}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if config.protect_metrics:
            authenticate(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        """The union of live workers' models."""
        authenticate(request)
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "kubechat"}
                for m in view.models()
            ],
        }

    async def proxy(request: Request) -> Response:
        path = request.url.path
        endpoint = ENDPOINTS[path]
        started = time.perf_counter()
        model = "-"
        try:
            authenticate(request)
            body = await _read_body(request, config.max_body_bytes)
            model, stream = _model_and_stream(body)
            _check_known(view, model)
            headers = {k: v for k, v in request.headers.items() if k.lower() in _PASS_HEADERS}
            send = state["upstream"].send(
                model=model,
                path=path,
                body=body,
                headers=headers,
                stream=stream,
                pick=lambda excluded: router.pick(model, exclude=excluded),
                track=lambda worker: router.track(worker).release,
            )
            result = send if stream else until_disconnect(send, request.is_disconnected)
            result = await result
        except OpenAIError as exc:
            metrics.requests.labels(model, endpoint, str(exc.status)).inc()
            raise
        if result is None:  # the client went away before the answer
            metrics.requests.labels(model, endpoint, "499").inc()
            return Response(status_code=499)
        metrics.requests.labels(model, endpoint, str(result.status)).inc()
        if isinstance(result, Buffered):
            metrics.duration.labels(model).observe(time.perf_counter() - started)
            return Response(result.body, status_code=result.status, headers=result.headers)
        metrics.ttft.labels(model).observe(time.perf_counter() - started)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in result.chunks:
                    yield chunk
            finally:
                metrics.duration.labels(model).observe(time.perf_counter() - started)

        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
        return StreamingResponse(
            relay(),
            status_code=result.status,
            headers=headers,
            media_type=result.headers.get("content-type", "text/event-stream"),
        )

    for path in ENDPOINTS:
        app.add_api_route(path, proxy, methods=["POST"], response_model=None)
    app.state.metrics = metrics
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(
            413, f"request body is larger than the limit of {limit} bytes", code="request_too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OpenAIError(
                413,
                f"request body is larger than the limit of {limit} bytes",
                code="request_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _model_and_stream(body: bytes) -> tuple[str, bool]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: a model name is required", param="model")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream: must be true or false", param="stream")
    return model, stream


def _check_known(view: LiveView, model: str) -> None:
    """404 for a model no worker has ever announced; a known model without live workers gets
    503 from the upstream step instead (it may come back)."""
    if model in view.models():
        return
    known = {m for w in view.all_workers() for m in w.record.models}
    if model not in known:
        raise model_not_found(model, view.models())
