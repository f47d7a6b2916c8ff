"""The gateway's HTTP API: one OpenAI-compatible endpoint over every live worker."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from kubechat.asgi_limits import BodyLimit, HeaderLimit, http_error
from kubechat.cold_start import HOLD_TIMEOUT, ColdStarts
from kubechat.discovery.demand import Demand
from kubechat.discovery.live import LiveView
from kubechat.openai_errors import ASGIResponse, OpenAIError, error_response, validation_error
from kubechat.routing import Router
from kubechat.upstream import RetryPolicy, Timeouts, Upstream

from .auth import KeyChecker, KeyGuard, missing_key
from .completions import COMPLETIONS, CompletionsEndpoint
from .metrics import GatewayMetrics
from .openapi_docs import document_endpoints

log = logging.getLogger(__name__)


@dataclass
class GatewayConfig:
    """Settings of the gateway (flags of ``kubechat gateway``)."""

    api_keys: list[str] = field(default_factory=list)
    protect_metrics: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    connect_timeout: float = 5.0
    upstream_timeout: float = 600.0  # longest silence from a worker mid-response
    # how often requests in flight are checked against their worker's lease (a frozen worker
    # keeps its connections open: its expired lease is what shows it is gone)
    lease_check_interval: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Browser origins allowed to call the API (CORS); none by default, so browsers refuse
    # cross-origin calls. "*" allows any origin.
    cors_origins: list[str] = field(default_factory=list)
    # how long a request for an autoscaled model with no live worker waits for one to start
    # (then 503); 0 answers 503 at once
    hold_timeout: float = HOLD_TIMEOUT


def create_app(
    view: LiveView,
    router: Router,
    config: GatewayConfig | None = None,
    *,
    lifespan_hooks: list | None = None,
    demand: Demand | None = None,
) -> FastAPI:
    """Build the gateway app over a discovery view and a router; with ``demand``, requests for
    an autoscaled model at zero workers wait for one (``config.hold_timeout``)."""
    config = config or GatewayConfig()
    keys = KeyChecker(config.api_keys)
    metrics = GatewayMetrics()
    cold_starts = ColdStarts(view, demand, config.hold_timeout, metrics)
    metrics.watch_discovery(
        lambda: {m: len(view.workers(m)) for m in view.models()},
        # every live worker has a series (0 when idle), so the panel shows 0, not "No data"
        lambda: {**{w.name: 0 for w in view.workers()}, **router.in_flight()},
        lambda: {s.record.name: s.heartbeat_age for s in view.all_workers()},
    )
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstream = Upstream(
            metrics,
            config.retry,
            Timeouts(connect=config.connect_timeout, read=config.upstream_timeout),
            lease_check=view.lost,
            lease_check_interval=config.lease_check_interval,
        )
        async with contextlib.AsyncExitStack() as stack:
            for hook in lifespan_hooks or []:
                await stack.enter_async_context(hook())
            stack.push_async_callback(upstream.aclose)
            state["upstream"] = upstream
            yield

    # /docs loads Swagger UI from this package, not a CDN (air-gapped clusters); like
    # /openapi.json it needs no API key (the /v1/ calls made from it do). No ReDoc: it fetches
    # its logo from its vendor's CDN
    app = FastAPIOffline(
        title="kubechat gateway", version="0.1.0", lifespan=lifespan, redoc_url=None
    )

    def answer(request: Request, err: OpenAIError) -> ASGIResponse:
        """The error's response, counted when it answers a completion endpoint."""
        endpoint = COMPLETIONS.get(request.url.path)
        if endpoint is not None:
            model = getattr(request.state, "model", "-")
            metrics.requests.labels(model, endpoint.label, str(err.status)).inc()
        return error_response(err)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> ASGIResponse:
        return answer(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ASGIResponse:
        return answer(request, http_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> ASGIResponse:
        return answer(request, validation_error(exc.errors()))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> ASGIResponse:
        log.exception("internal error on %s", request.url.path)
        return answer(request, OpenAIError(500, f"internal error: {type(exc).__name__}"))

    def authenticate(request: Request) -> None:
        """For /metrics when protected (the /v1/ endpoints are guarded by KeyGuard)."""
        if not keys.allows({k.lower(): v for k, v in request.headers.items()}):
            raise missing_key()

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
        """The union of live workers' models, and the autoscaled ones (a request for one at
        zero workers waits while a worker starts)."""
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "kubechat"}
                for m in sorted({*view.models(), *cold_starts.models()})
            ],
        }

    for path in COMPLETIONS:
        endpoint = CompletionsEndpoint(
            path, view, router, metrics, upstream=lambda: state["upstream"], cold_starts=cold_starts
        )
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    document_endpoints(app, COMPLETIONS)

    def rejected(path: str) -> None:
        endpoint = COMPLETIONS.get(path)
        if endpoint is not None:
            metrics.requests.labels("-", endpoint.label, "401").inc()

    app.add_middleware(KeyGuard, checker=keys, on_reject=rejected)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(HeaderLimit, limit=config.max_header_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "api-key", "x-api-key", "x-request-id"],
            expose_headers=["x-kubechat-worker", "retry-after"],
            max_age=600,
        )
    app.state.metrics = metrics
    return app
