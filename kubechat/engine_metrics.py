"""The model server metrics of each engine, under the Gateway API Inference Extension's protocol.

The protocol's endpoint picker scrapes three gauges from every model server: TotalQueuedRequests,
TotalRunningRequests and KVCacheUtilization (the fraction of the KV cache in use, 0 to 1). Their
names are the server's own; the picker is told them per pool. This table is the one place that
names them: our worker exports the ``transformers`` names (worker/metrics.py), the vLLM agent
reads vLLM's, and the chart hands them to an InferencePool's picker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolMetrics:
    """One engine's Prometheus names for the protocol's gauges."""

    queued: str  # TotalQueuedRequests: requests admitted and waiting for the engine
    running: str  # TotalRunningRequests: requests in the engine's running batch
    kv_cache_utilization: str  # KVCacheUtilization: fraction of the KV cache in use, 0..1


PROTOCOL_METRICS: dict[str, ProtocolMetrics] = {
    "transformers": ProtocolMetrics(
        queued="kubechat_worker_queued",
        running="kubechat_worker_running",
        kv_cache_utilization="kubechat_worker_kv_cache_utilization",
    ),
    # vLLM 0.32's names (also the picker's defaults)
    "vllm": ProtocolMetrics(
        queued="vllm:num_requests_waiting",
        running="vllm:num_requests_running",
        kv_cache_utilization="vllm:kv_cache_usage_perc",
    ),
}
