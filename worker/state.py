"""The worker's life: load the model in the background, serve, drain, stop.

The HTTP server starts before the model is loaded so that health checks answer at once and
requests get 503 (not a refused connection) while a large checkpoint loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple, dataclass

import torch

from kubechat.aio import in_own_thread
from kubechat.defaults import LEASE_DURATION, LEASE_RENEW_INTERVAL, WORKER_LIMIT_CONCURRENCY
from kubechat.discovery.heartbeat import Heartbeat
from kubechat.discovery.records import WorkerRecord
from kubechat.load_failure import LoadFailureReport

from .admission import Admission
from .embedding_serving import EmbeddingRuntime, EmbeddingServing
from .loading import ModelLoadError
from .metrics import WorkerMetrics
from .remote_code import remote_code_failure, where_raised
from .serving import ModelRuntime, Serving

log = logging.getLogger(__name__)


def load_failure_report(exc: BaseException) -> LoadFailureReport:
    """What a worker that could not load its model (or start its engine) reports: a
    ModelLoadError's reason and message; GPU memory running out as InsufficientGpuMemory; a
    failure in the checkpoint's own code as RemoteCodeIncompatible, with where it was raised
    and what to change; anything else as ModelLoadFailed with its exception type and place."""
    if isinstance(exc, ModelLoadError):
        return LoadFailureReport(exc.reason, str(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return LoadFailureReport(
            "InsufficientGpuMemory",
            f"ran out of GPU memory starting the engine ({exc}): lower --kv-cache-memory or "
            "--max-gpu-memory, or add GPUs",
        )
    if (remote := remote_code_failure(exc)) is not None:
        return LoadFailureReport("RemoteCodeIncompatible", remote)
    return LoadFailureReport("ModelLoadFailed", where_raised(exc))


@dataclass
class Identity:
    """How this worker names itself in its lease."""

    name: str
    deployment: str
    address: str  # base URL the gateway reaches it at


class WorkerState:
    """Everything the API reads: the serving logic once loaded, load and drain state."""

    def __init__(
        self,
        model_names: list[str],
        load: Callable[[], ModelRuntime | EmbeddingRuntime],
        *,
        limit_concurrency: int = WORKER_LIMIT_CONCURRENCY,
        stream_interval: int = 1,
        on_fatal: Callable[[LoadFailureReport], None] | None = None,
        identity: Identity | None = None,
        lease_writer: object | None = None,
        renew_interval: float = LEASE_RENEW_INTERVAL,
        lease_duration: float = LEASE_DURATION,
    ) -> None:
        self.model_names = list(model_names)
        self.metrics = WorkerMetrics()
        self.admission = Admission(limit_concurrency)
        self.serving: Serving | None = None  # a generative model's endpoints, once loaded
        self.embedding: EmbeddingServing | None = None  # an embedding model's, once loaded
        self.runtime: ModelRuntime | EmbeddingRuntime | None = None
        self.draining = False
        self.load_error: LoadFailureReport | None = None
        self._load = load
        self._stream_interval = stream_interval
        self._on_fatal = on_fatal
        self._loader: asyncio.Task | None = None
        self.loaded = asyncio.Event()
        self.identity = identity
        self.heartbeat: Heartbeat | None = None
        if identity is not None and lease_writer is not None:
            self.heartbeat = Heartbeat(
                lease_writer, self.record, renew_interval, lease_duration=lease_duration
            )
        self.metrics.capacity.set(limit_concurrency)
        self.metrics.bind_load(
            in_flight=lambda: self.admission.in_flight,
            running=lambda: self.runtime.engine.stats().running if self.runtime else 0,
            queued=lambda: self.runtime.engine.stats().queued if self.runtime else 0,
            kv_cache_utilization=lambda: (
                self.runtime.engine.stats().kv_cache_utilization if self.runtime else 0.0
            ),
        )

    @property
    def ready(self) -> bool:
        """True when the model is loaded and the worker takes new requests."""
        return self.loaded.is_set() and not self.draining

    def record(self) -> WorkerRecord:
        """This worker's lease record as of now (load figures included)."""
        assert self.identity is not None
        stats = self.runtime.engine.stats() if self.runtime else None
        return WorkerRecord(
            name=self.identity.name,
            deployment=self.identity.deployment,
            models=tuple(self.model_names),
            address=self.identity.address,
            ready=self.runtime is not None,
            draining=self.draining,
            in_flight=self.admission.in_flight,
            queued=stats.queued if stats else 0,
            capacity=self.admission.limit,
            renew_time=time.time(),
        )

    async def drain(self, grace: float) -> None:
        """Stop taking requests (lease marked draining, 503 to newcomers) and wait up to
        ``grace`` seconds for the admitted ones to finish."""
        self.draining = True
        if self.heartbeat is not None:
            await self.heartbeat.mark_draining()
        deadline = time.monotonic() + grace
        while self.admission.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.admission.in_flight:
            log.warning(
                "drain grace of %.0fs over with %d sequences still running",
                grace,
                self.admission.in_flight,
            )

    async def load(self) -> None:
        """Load the model off the event loop, then start its engine."""
        try:
            runtime = await in_own_thread(self._load, name="model-load")
            await runtime.engine.start()
        except Exception as exc:
            self.load_error = load_failure_report(exc)
            log.error("model load failed (%s): %s", *astuple(self.load_error))
            if self._on_fatal:
                self._on_fatal(self.load_error)
            return
        self.runtime = runtime
        if runtime.names:
            self.model_names = list(runtime.names)
        if isinstance(runtime, EmbeddingRuntime):
            self.embedding = EmbeddingServing(runtime, self.admission, self.metrics)
        else:
            self.serving = Serving(runtime, self.admission, self.metrics, self._stream_interval)
        self.metrics.engine_path.labels(runtime.engine.path).set(1)
        if self.heartbeat is not None:
            # routable as soon as ready: readiness below implies the gateway can see us
            await self.heartbeat.publish_now()
        self.metrics.ready.set(1)
        log.info(
            "ready: serving %s with the %s engine", ", ".join(self.model_names), runtime.engine.path
        )
        self.loaded.set()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """FastAPI lifespan: start loading on startup; stop the engine on shutdown."""
        self._loader = asyncio.create_task(self.load())
        if self.heartbeat is not None:
            self.heartbeat.start()
        try:
            yield
        finally:
            self.draining = True
            if not self._loader.done():
                self._loader.cancel()
            if self.heartbeat is not None:
                await self.heartbeat.stop()  # a clean exit leaves no lease behind
            if self.runtime is not None:
                await self.runtime.engine.stop()
