"""The worker's Prometheus metrics, on a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from kubechat.engine_metrics import PROTOCOL_METRICS

disable_created_metrics()  # the *_created series only add noise to every scrape

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# the Gateway API Inference Extension's gauges (queued, running, KV cache) under our names
_PROTOCOL = PROTOCOL_METRICS["transformers"]


class WorkerMetrics:
    """Counters, gauges and histograms the worker exports on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kubechat_worker_requests",
            "Requests answered, by model, endpoint and status: the HTTP status, except for a "
            "stream, counted when it ends: 200 completed, 499 client gone, else its error's status",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.streams = Counter(
            "kubechat_worker_streams",
            "Streamed responses by how they ended: completed, error (an error event) or "
            "cancelled (the client went away)",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "kubechat_worker_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "kubechat_worker_completion_tokens",
            "Completion tokens generated",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "kubechat_worker_time_to_first_token_seconds",
            "Time from request to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kubechat_worker_inter_token_latency_seconds",
            "Time between consecutive tokens",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "kubechat_worker_request_duration_seconds",
            "Time from request to last token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "kubechat_worker_in_flight", "Sequences admitted (running or queued)", registry=r
        )
        self.running = Gauge(
            _PROTOCOL.running,
            "Sequences generating now (the Inference Extension's TotalRunningRequests)",
            registry=r,
        )
        self.queued = Gauge(
            _PROTOCOL.queued,
            "Sequences waiting for the engine (the Inference Extension's TotalQueuedRequests)",
            registry=r,
        )
        self.kv_cache_utilization = Gauge(
            _PROTOCOL.kv_cache_utilization,
            "Share of the engine's KV cache room in use, 0 to 1 (the Inference Extension's "
            "KVCacheUtilization): reserved positions over the KV budget, or batch rows over "
            "the capacity where only the batch size bounds the cache",
            registry=r,
        )
        self.capacity = Gauge(
            "kubechat_worker_capacity", "Sequences the worker admits at once", registry=r
        )
        self.ready = Gauge("kubechat_worker_ready", "1 once the model is loaded", registry=r)
        self.engine_path = Gauge(
            "kubechat_worker_engine_info",
            "The generation path in use (value 1)",
            ["path"],
            registry=r,
        )

    def bind_load(
        self,
        in_flight: Callable[[], float],
        running: Callable[[], float],
        queued: Callable[[], float],
        kv_cache_utilization: Callable[[], float] | None = None,
    ) -> None:
        """Read load gauges from live callbacks at scrape time."""
        self.in_flight.set_function(in_flight)
        self.running.set_function(running)
        self.queued.set_function(queued)
        if kv_cache_utilization is not None:
            self.kv_cache_utilization.set_function(kv_cache_utilization)
