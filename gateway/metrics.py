"""The gateway's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()

# the reasons kubechat.upstream gives a broken stream, and the gateway's own ("internal")
STREAM_ERROR_REASONS = ("connection_closed", "timeout", "read_error", "lease_lost", "internal")

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# a worker starting from zero: a pod scheduled, an image pulled, a model loaded
_COLD_START_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class _LiveCollector(Collector):
    """Live workers per model and in-flight per worker, read from discovery at scrape time."""

    def __init__(
        self,
        live_per_model: Callable[[], dict[str, int]],
        in_flight: Callable[[], dict[str, int]],
        heartbeat_ages: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._live = live_per_model
        self._in_flight = in_flight
        self._ages = heartbeat_ages

    def collect(self) -> Iterable[GaugeMetricFamily]:
        live = GaugeMetricFamily(
            "kubechat_gateway_live_workers",
            "Workers that receive traffic, per model",
            labels=["model"],
        )
        for model, n in sorted(self._live().items()):
            live.add_metric([model], n)
        yield live
        busy = GaugeMetricFamily(
            "kubechat_gateway_worker_in_flight",
            "Requests the gateway has in flight, per worker",
            labels=["worker"],
        )
        for worker, n in sorted(self._in_flight().items()):
            busy.add_metric([worker], n)
        yield busy
        if self._ages is not None:
            ages = GaugeMetricFamily(
                "kubechat_gateway_worker_heartbeat_age_seconds",
                "Seconds since each known worker last renewed its lease (live or not)",
                labels=["worker"],
            )
            for worker, age in sorted(self._ages().items()):
                ages.add_metric([worker], age)
            yield ages


class GatewayMetrics:
    """Counters and histograms of the gateway."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._streamed_models: set[str] = set()
        self.requests = Counter(
            "kubechat_gateway_requests",
            "Requests by model, endpoint and code (model '-': no served model named, e.g. an "
            "unknown model, a refused key, an invalid body)",
            ["model", "endpoint", "code"],
            registry=r,
        )
        self.retries = Counter(
            "kubechat_gateway_retries",
            "Requests sent again to another worker, by reason",
            ["model", "reason"],
            registry=r,
        )
        self.stream_errors = Counter(
            "kubechat_gateway_stream_errors",
            "Streams that broke off after their 200 (the client got an error event, or was cut "
            "off: reason 'internal'), by model and reason",
            ["model", "reason"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "kubechat_gateway_upstream_latency_seconds",
            "Time until a worker's response headers arrive",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "kubechat_gateway_time_to_first_token_seconds",
            "Time until the first streamed chunk reaches the client",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "kubechat_gateway_request_duration_seconds",
            "Time until the response is complete",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )

        self.held_requests = Gauge(
            "kubechat_gateway_held_requests",
            "Requests waiting for an autoscaled model's first worker to start, per model",
            ["model"],
            registry=r,
        )
        self.held_timeouts = Counter(
            "kubechat_gateway_held_timeouts",
            "Held requests answered 503 because no worker was ready by their deadline",
            ["model"],
            registry=r,
        )
        self.cold_start = Histogram(
            "kubechat_gateway_cold_start_seconds",
            "Time from the first request held for a model at zero workers to a live worker",
            ["model"],
            buckets=_COLD_START_BUCKETS,
            registry=r,
        )

    def held(self, model: str, change: int) -> None:
        """Requests start (+1) or stop (-1) waiting for ``model`` (kubechat.cold_start's
        observer); its series exist from the first on, the timeouts and cold starts at 0 (so
        that the first one shows as an increase)."""
        self.held_requests.labels(model).inc(change)
        self.held_timeouts.labels(model)
        self.cold_start.labels(model)

    def started(self, model: str, seconds: float) -> None:
        """``model`` got a live worker ``seconds`` after its first request was held."""
        self.cold_start.labels(model).observe(seconds)

    def timed_out(self, model: str) -> None:
        """A held request for ``model`` reached its deadline."""
        self.held_timeouts.labels(model).inc()

    def answered(self, model: str, seconds: float) -> None:
        """An upstream worker answered after ``seconds`` (kubechat.upstream's observer)."""
        self.upstream_latency.labels(model).observe(seconds)

    def retried(self, model: str, reason: str) -> None:
        """A request was sent to another worker after ``reason``."""
        self.retries.labels(model, reason).inc()

    def stream_failed(self, model: str, reason: str) -> None:
        """A stream under way broke off after ``reason``."""
        self.stream_errors.labels(model, reason).inc()

    def streaming(self, model: str) -> None:
        """A stream of ``model`` starts: its stream-error series exist from now on (at 0), so a
        dashboard shows 0 rather than no data while nothing broke off."""
        if model in self._streamed_models:
            return
        self._streamed_models.add(model)
        for reason in STREAM_ERROR_REASONS:
            self.stream_errors.labels(model, reason)

    def watch_discovery(
        self,
        live_per_model: Callable[[], dict[str, int]],
        in_flight: Callable[[], dict[str, int]],
        heartbeat_ages: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        """Export discovery's view (live workers, in-flight, lease ages) on every scrape."""
        self.registry.register(_LiveCollector(live_per_model, in_flight, heartbeat_ages))
