"""The worker's HTTP API: OpenAI endpoints, health, metrics. Routing only; logic is in serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubechat.aio import until_disconnect
from kubechat.asgi_limits import BodyLimit, HeaderLimit, http_error
from kubechat.openai_errors import (
    ASGIResponse,
    OpenAIError,
    error_response,
    unavailable,
    validation_error,
)
from kubechat.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    model_list,
)

from .embedding_serving import EmbeddingServing, completions_refused, embeddings_refused
from .response_metrics import CLIENT_GONE, CountResponses, StreamOutcome, label_model, report_status
from .serving import Serving
from .state import WorkerState
from .stream_chunks import DONE_EVENT

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_SECONDS = 5.0


def create_app(
    state: WorkerState,
    max_body_bytes: int = 4 * 1024 * 1024,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> FastAPI:
    """Build the FastAPI app over a worker state (which may still be loading).

    A stream silent for ``keepalive_seconds`` (waiting for its turn in a busy engine) gets an
    SSE comment line, which clients ignore, so that no proxy's idle timeout cuts a healthy stream.
    """
    # /docs loads Swagger UI from this package, not a CDN (air-gapped clusters); no ReDoc:
    # it fetches its logo from its vendor's CDN
    app = FastAPIOffline(
        title="kubechat worker", version="0.1.0", lifespan=state.lifespan, redoc_url=None
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(HeaderLimit)
    app.add_middleware(CountResponses, metrics=state.metrics)  # outermost: sees every answer
    app.state.worker = state
    metrics = state.metrics

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> ASGIResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ASGIResponse:
        return error_response(http_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> ASGIResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> ASGIResponse:
        log.exception("internal error on %s", request.url.path)
        return error_response(OpenAIError(500, f"internal error: {type(exc).__name__}: {exc}"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and the worker is not draining."""
        if not state.loaded.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The model names this worker serves."""
        extra = {}
        if state.serving is not None:
            # a chat page starts its sliders here (FastChat's gradio server had them hard-coded)
            defaults = state.serving.rt.defaults
            extra["generation_defaults"] = {
                "temperature": defaults.get("temperature"),
                "top_p": defaults.get("top_p"),
                "max_tokens": defaults.get("max_new_tokens"),
                "context_length": state.serving.rt.context_length,
            }
        return model_list(state.model_names, extra=extra)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions, streamed or not."""
        return await _serve(request, "chat", body, lambda s: s.prepare_chat(body))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """OpenAI completions, streamed or not."""
        return await _serve(request, "completions", body, lambda s: s.prepare_completion(body))

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """OpenAI embeddings, from a worker serving an embedding model."""
        if body.model in state.model_names:
            label_model(request.scope, body.model)
        embedding = _embedding(state, body.model)
        inputs = embedding.token_ids(body)
        slot = embedding.admission.acquire(1)
        try:
            result = await until_disconnect(embedding.create(body, inputs), request.is_disconnected)
        finally:
            slot.release()
        if result is None:  # client went away; its inputs not yet run were dropped
            return PlainTextResponse("client disconnected", status_code=CLIENT_GONE)
        return JSONResponse(result)

    async def _serve(request: Request, endpoint: str, body: Any, prepare: Callable) -> Response:
        model = body.model
        if model in state.model_names:
            label_model(request.scope, model)
        serving = _serving(state)
        job = prepare(serving)
        slot = serving.admit(job)
        if body.stream:
            outcome = StreamOutcome()

            async def events() -> AsyncGenerator[str, None]:
                async for event in serving.stream(job, keepalive_seconds):
                    if event == DONE_EVENT:
                        # free the slot before the client can read the end and send its
                        # next request, or that request could find the worker still full
                        slot.release()
                        if job.error is None:
                            outcome.completed()
                        else:
                            outcome.failed(job.error.status)
                    yield event

            def ended() -> None:
                slot.release()
                report_status(request.scope, outcome.status)
                metrics.streams.labels(model, endpoint, outcome.outcome).inc()

            return ClosingStream(events(), ended)
        try:
            result = await until_disconnect(serving.complete(job), request.is_disconnected)
        finally:
            slot.release()
        if result is None:  # client went away; its generation was cancelled
            return PlainTextResponse("client disconnected", status_code=CLIENT_GONE)
        return JSONResponse(result)

    return app


class ClosingStream(StreamingResponse):
    """An SSE response that, however it ends, closes its event generator and calls ``on_end``.

    When the client goes away while a chunk is being sent, Starlette stops iterating and leaves
    the generator suspended, to be closed whenever it is collected; closing it here stops the
    generation at once and makes the outcome known before the request is counted.
    """

    def __init__(self, events: AsyncGenerator[str, None], on_end: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self._events = events
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Stream the events, then close them and report the end."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._events.aclose()
            finally:
                self._on_end()


def _serving(state: WorkerState) -> Serving:
    _check_loaded(state)
    if state.serving is None:
        raise completions_refused(state.model_names)
    return state.serving


def _embedding(state: WorkerState, model: str) -> EmbeddingServing:
    _check_loaded(state)
    if state.embedding is None:
        raise embeddings_refused(model, state.model_names)
    return state.embedding


def _check_loaded(state: WorkerState) -> None:
    if state.draining:
        raise unavailable("worker is shutting down; send the request elsewhere", code="draining")
    if state.runtime is None:
        raise unavailable("model is still loading", retry_after=5, code="loading")
