"""The gateway's model endpoints (chat and text completions, embeddings): read the body, route
it to a live worker, relay back.

They are plain ASGI apps on the app's router rather than FastAPI operations: FastAPI's per-request
machinery (the request/response wrappers, dependency solving, body parsing and its second
validation pass) cost about a quarter of the gateway's CPU per request, and every request of the
API goes through here. The body gets the same checks a FastAPI body parameter makes
(``request_body.parse_body``), and the app's OpenAPI schema still documents the endpoints
(``openapi_docs.document_endpoints``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kubechat.aio import until_disconnect
from kubechat.asgi_limits import BodyTooLarge
from kubechat.cold_start import ColdStarts
from kubechat.discovery.live import LiveView
from kubechat.openai_errors import OpenAIError, error_response, model_not_found
from kubechat.openai_protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from kubechat.routing import Router
from kubechat.upstream import Buffered, Upstream

from .metrics import GatewayMetrics
from .relay import RelayResponse
from .request_body import parse_body


@dataclass(frozen=True)
class Completion:
    """One completions path: its metric label, its request model and its summary in the schema."""

    label: str
    schema: type[BaseModel]
    summary: str


COMPLETIONS = {
    "/v1/chat/completions": Completion(
        "chat",
        ChatCompletionRequest,
        "OpenAI chat completions, routed to a live worker serving `model`",
    ),
    "/v1/completions": Completion(
        "completions",
        CompletionRequest,
        "OpenAI completions, routed to a live worker serving `model`",
    ),
    "/v1/embeddings": Completion(
        "embeddings",
        EmbeddingRequest,
        "OpenAI embeddings, routed to a live worker serving the embedding model `model`",
    ),
}
_PASS_HEADERS = ("content-type", "accept", "openai-organization", "x-request-id")


class CompletionsEndpoint:
    """ASGI app of one path of ``COMPLETIONS``.

    ``upstream()`` gives the connection pool to the workers (opened in the app's lifespan).
    Errors are answered as OpenAI error JSON and counted; anything unexpected propagates to the
    app's handler for internal errors.
    """

    def __init__(
        self,
        path: str,
        view: LiveView,
        router: Router,
        metrics: GatewayMetrics,
        upstream: Callable[[], Upstream],
        cold_starts: ColdStarts | None = None,
    ) -> None:
        self.path = path
        self.endpoint = COMPLETIONS[path].label
        self.schema = COMPLETIONS[path].schema
        self.view = view
        self.router = router
        self.metrics = metrics
        self.upstream = upstream
        self.cold_starts = cold_starts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request."""
        request = Request(scope, receive)
        try:
            response = await self._respond(request)
        except OpenAIError as err:
            model = getattr(request.state, "model", "-")
            self.metrics.requests.labels(model, self.endpoint, str(err.status)).inc()
            response = error_response(err)
        except BodyTooLarge:  # answered 413 by the BodyLimit middleware
            self.metrics.requests.labels("-", self.endpoint, "413").inc()
            raise
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            self.metrics.requests.labels("-", self.endpoint, "499").inc()
            return
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        metrics = self.metrics
        started = time.perf_counter()
        body = await request.body()  # the raw bytes, passed on unchanged (vendor extras too)
        headers = request.headers
        parsed = parse_body(self.schema, headers.get("content-type"), body)
        model: str = parsed.model  # type: ignore[attr-defined]
        _check_known(self.view, model, self.cold_starts)
        # labelled only once known: a made-up name (a 404) must not create a metric series
        request.state.model = model
        cold = self.cold_starts
        # an autoscaled model at zero: wait for its worker (nothing is sent before)
        if cold is not None and cold.starting(model):
            held = await until_disconnect(cold.wait(model), request.is_disconnected)
            if held is None:  # the client went away while waiting
                metrics.requests.labels(model, self.endpoint, "499").inc()
                return Response(status_code=499)
        stream: bool = getattr(parsed, "stream", False)  # embeddings are never streamed
        router = self.router
        send = self.upstream().send(
            model=model,
            path=self.path,
            body=body,
            headers={k: v for k, v in headers.items() if k in _PASS_HEADERS},
            stream=stream,
            pick=lambda excluded: router.pick(model, exclude=excluded),
            track=lambda worker: router.track(worker).release,
        )
        result = await (send if stream else until_disconnect(send, request.is_disconnected))
        if result is None:  # the client went away before the answer
            metrics.requests.labels(model, self.endpoint, "499").inc()
            return Response(status_code=499)
        metrics.requests.labels(model, self.endpoint, str(result.status)).inc()
        if isinstance(result, Buffered):
            metrics.duration.labels(model).observe(time.perf_counter() - started)
            return Response(result.body, status_code=result.status, headers=result.headers)
        metrics.ttft.labels(model).observe(time.perf_counter() - started)
        metrics.streaming(model)

        def ended() -> None:
            metrics.duration.labels(model).observe(time.perf_counter() - started)

        return RelayResponse(result, ended, lambda: metrics.stream_failed(model, "internal"))


def _check_known(view: LiveView, model: str, cold_starts: ColdStarts | None = None) -> None:
    """404 for a model the gateway never saw in a worker record and no autoscaled deployment
    serves; a model it saw whose workers are all gone (exited, scaled to 0) or not live gets 503
    from the upstream step instead: it may come back."""
    if model in view.models() or model in view.known_models():
        return
    if cold_starts is not None and cold_starts.deployment_for(model) is not None:
        return
    raise model_not_found(model, view.models())
