"""Reading an engine server over HTTP: is it healthy, how loaded is it, which models it serves.

Health is ``GET /health`` answering 200; load comes from ``GET /metrics`` (Prometheus text), read
under the engine's names for the Inference Extension's gauges (kubechat/engine_metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kubechat.engine_metrics import ProtocolMetrics


@dataclass(frozen=True)
class EngineReading:
    """One look at the engine: healthy or why not, and its load when healthy."""

    healthy: bool
    running: int = 0
    queued: int = 0
    kv_cache_utilization: float = 0.0
    error: str | None = None

    @property
    def busy(self) -> int:
        """Requests the engine holds: running plus waiting."""
        return self.running + self.queued


def parse_load(text: str, names: ProtocolMetrics) -> EngineReading:
    """The load in a Prometheus exposition; raises ValueError naming a gauge that is missing.

    Running and queued requests are summed over the series (vLLM has one per engine core and
    model); the KV-cache utilisation is the fullest series'.
    """
    wanted = {names.running: [], names.queued: [], names.kv_cache_utilization: []}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                wanted[sample.name].append(sample.value)
    missing = [name for name, values in wanted.items() if not values]
    if missing:
        raise ValueError(f"/metrics has no {', '.join(missing)}")
    return EngineReading(
        healthy=True,
        running=round(sum(wanted[names.running])),
        queued=round(sum(wanted[names.queued])),
        kv_cache_utilization=max(wanted[names.kv_cache_utilization]),
    )


class EngineProbe:
    """Reads one engine server at ``base_url`` (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, names: ProtocolMetrics, timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.names = names
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def read(self) -> EngineReading:
        """Health, then load; any failure is an unhealthy reading that says what failed."""
        try:
            health = await self._client.get("/health")
            if health.status_code != 200:
                return EngineReading(False, error=f"/health answered {health.status_code}")
            metrics = await self._client.get("/metrics")
            metrics.raise_for_status()
            return parse_load(metrics.text, self.names)
        except (httpx.HTTPError, ValueError) as exc:
            return EngineReading(False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def served_models(self) -> list[str]:
        """The model names the engine answers to (``GET /v1/models``)."""
        response = await self._client.get("/v1/models")
        response.raise_for_status()
        return [m["id"] for m in response.json().get("data", [])]

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
