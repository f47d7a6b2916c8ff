"""The worker's life: load the model in the background, serve, drain, stop.

The HTTP server starts before the model is loaded so that health checks answer at once and
requests get 503 (not a refused connection) while a large checkpoint loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from .admission import Admission
from .metrics import WorkerMetrics
from .serving import ModelRuntime, Serving

log = logging.getLogger(__name__)


class WorkerState:
    """Everything the API reads: the serving logic once loaded, load and drain state."""

    def __init__(
        self,
        model_names: list[str],
        load: Callable[[], ModelRuntime],
        *,
        limit_concurrency: int = 5,
        stream_interval: int = 1,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.model_names = list(model_names)
        self.metrics = WorkerMetrics()
        self.admission = Admission(limit_concurrency)
        self.serving: Serving | None = None
        self.runtime: ModelRuntime | None = None
        self.draining = False
        self.load_error: str | None = None
        self._load = load
        self._stream_interval = stream_interval
        self._on_fatal = on_fatal
        self._loader: asyncio.Task | None = None
        self.loaded = asyncio.Event()
        self.metrics.capacity.set(limit_concurrency)
        self.metrics.bind_load(
            in_flight=lambda: self.admission.in_flight,
            running=lambda: self.runtime.engine.stats().running if self.runtime else 0,
            queued=lambda: self.runtime.engine.stats().queued if self.runtime else 0,
        )

    @property
    def ready(self) -> bool:
        """True when the model is loaded and the worker takes new requests."""
        return self.serving is not None and not self.draining

    async def load(self) -> None:
        """Load the model off the event loop, then start its engine."""
        try:
            runtime = await asyncio.to_thread(self._load)
            await runtime.engine.start()
        except Exception as exc:
            self.load_error = str(exc) or type(exc).__name__
            log.error("model load failed: %s", self.load_error)
            if self._on_fatal:
                self._on_fatal(self.load_error)
            return
        self.runtime = runtime
        if runtime.names:
            self.model_names = list(runtime.names)
        self.serving = Serving(runtime, self.admission, self.metrics, self._stream_interval)
        self.metrics.engine_path.labels(runtime.engine.path).set(1)
        self.metrics.ready.set(1)
        log.info(
            "ready: serving %s with the %s engine", ", ".join(self.model_names), runtime.engine.path
        )
        self.loaded.set()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """FastAPI lifespan: start loading on startup; stop the engine on shutdown."""
        self._loader = asyncio.create_task(self.load())
        try:
            yield
        finally:
            self.draining = True
            if not self._loader.done():
                self._loader.cancel()
            if self.runtime is not None:
                await self.runtime.engine.stop()
