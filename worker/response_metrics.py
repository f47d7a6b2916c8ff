"""Counting every OpenAI API response by its real status, as plain ASGI middleware.

One place counts, whoever answered: the endpoint, an exception handler (400 for a body that
fails validation, 404, 500), or a request limit further out (413, 431). A streamed response
sends its 200 header before it runs, so it reports its own status when it ends (see
``StreamOutcome``); the middleware counts that instead of the header's.
"""

from __future__ import annotations

from typing import Any

from .metrics import WorkerMetrics

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
UNKNOWN_MODEL = "-"  # the label until the request names a served model (no series per typo)
CLIENT_GONE = 499  # nginx's code for a client that closed the connection before the answer

# keys in the ASGI scope's "state" dict (Starlette's ``request.state``)
_MODEL_KEY = "kubechat_model"
_STATUS_KEY = "kubechat_final_status"


def label_model(scope: dict, model: str) -> None:
    """Count this request under ``model`` (call it once the model is known to be served)."""
    scope.setdefault("state", {})[_MODEL_KEY] = model


def report_status(scope: dict, status: int) -> None:
    """Count this request with ``status`` whatever HTTP status its header carried."""
    scope.setdefault("state", {})[_STATUS_KEY] = status


class StreamOutcome:
    """How one streamed response ended: ``completed``, ``error`` or ``cancelled``."""

    def __init__(self) -> None:
        self.outcome = "cancelled"  # until the stream says otherwise, the client left early
        self.error_status: int | None = None

    def completed(self) -> None:
        """The whole reply was sent."""
        self.outcome = "completed"

    def failed(self, status: int) -> None:
        """The stream ended with an error event carrying ``status``."""
        self.outcome = "error"
        self.error_status = status

    @property
    def status(self) -> int:
        """The status the request is counted with."""
        if self.outcome == "completed":
            return 200
        if self.outcome == "error":
            return self.error_status or 500
        return CLIENT_GONE


class CountResponses:
    """ASGI middleware: one ``kubechat_worker_requests`` count per API request, once it ends."""

    def __init__(self, app: Any, metrics: WorkerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        sent: int | None = None

        async def watching_send(message: dict) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                sent = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            status = state.get(_STATUS_KEY) or sent or CLIENT_GONE
            model = state.get(_MODEL_KEY) or UNKNOWN_MODEL
            self.metrics.requests.labels(model, endpoint, str(status)).inc()
