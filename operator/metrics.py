"""The operator's Prometheus metrics, on a registry of its own, served by a small HTTP thread.

Series (the shipped Grafana dashboard plots the first two):

- ``kubechat_operator_reconciles_total{result}``: reconcile passes by result: ``ok``,
  ``invalid`` (the spec cannot be served: the InvalidSpec condition) or ``error`` (the pass
  raised, typically a failed Kubernetes API call; kopf retries it);
- ``kubechat_operator_errors_total``: failed handler runs (a reconcile or a deletion that raised);
- ``kubechat_operator_reconcile_duration_seconds``: how long a pass took;
- ``kubechat_operator_deployment_replicas{deployment_namespace,deployment}``: the workers
  each ModelDeployment asks for, and ``kubechat_operator_deployment_model_info{...,model}`` (1)
  for each model name it serves: what should be live, whether or not it ever was (the gateway
  knows only models with a live worker; the "no live worker" alert joins the two). The label is
  not ``namespace``: Prometheus sets that one to the operator pod's own namespace. With
  ``spec.autoscaling`` the replicas asked for are the autoscaler's last decision;
- ``kubechat_operator_deployment_desired_replicas{...}`` and
  ``kubechat_operator_deployment_ready_replicas{...}``: the workers the last pass aimed at
  (``status.desiredReplicas``) and those ready with a fresh lease (``status.readyReplicas``).

Every label child of the counters exists from the start at 0, so the dashboard shows 0 rather
than no data; the deployment series exist while their ModelDeployment does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

disable_created_metrics()

RESULTS = ("ok", "invalid", "error")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    """Counters and the duration histogram of the operator."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.reconciles = Counter(
            "kubechat_operator_reconciles",
            "Reconcile passes by result (ok, invalid spec, error)",
            ["result"],
            registry=r,
        )
        for result in RESULTS:
            self.reconciles.labels(result)
        self.errors = Counter(
            "kubechat_operator_errors",
            "Failed handler runs (a reconcile or a deletion raised, e.g. a failed API call)",
            registry=r,
        )
        self.duration = Histogram(
            "kubechat_operator_reconcile_duration_seconds",
            "Time one reconcile pass took",
            buckets=_BUCKETS,
            registry=r,
        )

        self.replicas = Gauge(
            "kubechat_operator_deployment_replicas",
            "Workers a ModelDeployment asks for (spec.replicas)",
            ["deployment_namespace", "deployment"],
            registry=r,
        )
        self.models = Gauge(
            "kubechat_operator_deployment_model_info",
            "1 for each model name a ModelDeployment serves",
            ["deployment_namespace", "deployment", "model"],
            registry=r,
        )
        self.desired = Gauge(
            "kubechat_operator_deployment_desired_replicas",
            "Workers the operator aims at (status.desiredReplicas: the autoscaler's decision "
            "when spec.autoscaling is set)",
            ["deployment_namespace", "deployment"],
            registry=r,
        )
        self.ready = Gauge(
            "kubechat_operator_deployment_ready_replicas",
            "Workers ready with a fresh heartbeat lease (status.readyReplicas)",
            ["deployment_namespace", "deployment"],
            registry=r,
        )
        self._served: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()  # kopf runs sync handlers on a thread pool

    def deployment(self, namespace: str, name: str, replicas: int, models: Iterable[str]) -> None:
        """Record what a ModelDeployment asks for: its replicas and served model names."""
        models = set(models)
        with self._lock:
            self.replicas.labels(namespace, name).set(replicas)
            for old in self._served.get((namespace, name), set()) - models:
                self.models.remove(namespace, name, old)
            for model in models:
                self.models.labels(namespace, name, model).set(1)
            self._served[(namespace, name)] = models

    def observed(self, namespace: str, name: str, desired: int | None, ready: int | None) -> None:
        """Record what a pass found: the workers aimed at and those ready (None: unknown)."""
        with self._lock:
            if desired is not None:
                self.desired.labels(namespace, name).set(desired)
            if ready is not None:
                self.ready.labels(namespace, name).set(ready)

    def forget_deployment(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted ModelDeployment."""
        with self._lock:
            if (namespace, name) not in self._served:
                return
            for model in self._served.pop((namespace, name)):
                self.models.remove(namespace, name, model)
            self.replicas.remove(namespace, name)
            for gauge in (self.desired, self.ready):
                with contextlib.suppress(KeyError):  # never observed
                    gauge.remove(namespace, name)

    @contextmanager
    def reconcile(self) -> Iterator[list[str]]:
        """Time and count one pass. The block may set ``outcome[0]`` (default ``"ok"``); an
        exception counts as ``"error"`` and as one error, and is re-raised."""
        outcome = ["ok"]
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            outcome[0] = "error"
            self.errors.inc()
            raise
        finally:
            self.duration.observe(time.perf_counter() - start)
            self.reconciles.labels(outcome[0]).inc()

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (raises OSError if taken)."""
        start_http_server(port, addr=host, registry=self.registry)
