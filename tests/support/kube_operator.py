"""The real ``kubechat operator`` as a subprocess on an emulated API, with its metrics and health
endpoints on free ports, and a small ModelDeployment for it to reconcile.

No pod runner is needed: the worker pods it creates are just API objects (they stay Pending)::

    with running_emulator(crds=[CRD]) as emu, running_operator(emu.kubeconfig, log) as op:
        create_model_deployment(emu.kubeconfig)
        op.wait_for_reconciles(1)
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube_server import kubernetes_client
from tests.support.processes import free_port, kubechat_argv, running, tail, wait_http

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "demo-cluster.yaml"
GROUP, VERSION, PLURAL = "kubechat.dev", "v1alpha1", "modeldeployments"


@dataclass
class RunningOperator:
    """A started operator: its process, endpoints (``host:port`` for scrape configs) and log."""

    metrics_address: str
    health_address: str
    log: Path
    process: subprocess.Popen | None = None

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint."""
        return f"http://{self.metrics_address}/metrics"

    @property
    def health_url(self) -> str:
        """kopf's liveness endpoint."""
        return f"http://{self.health_address}/healthz"

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, or None when the series is absent."""
        return self.samples().get((name, tuple(sorted(labels.items()))))

    def wait_for_reconciles(self, count: int, result: str = "ok", timeout: float = 60) -> float:
        """Wait until ``kubechat_operator_reconciles_total{result}`` reaches ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.value("kubechat_operator_reconciles_total", result=result) or 0
            if seen >= count:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{seen} {result} reconciles after {timeout}s, wanted {count}\n"
                    f"--- log {self.log} ---\n{tail(self.log)}"
                )
            time.sleep(0.2)


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    while (second := free_port()) == first:
        pass
    return first, second


@contextlib.contextmanager
def running_operator(
    kubeconfig: Path,
    log_path: Path,
    *,
    namespace: str = "default",
    reconcile_interval: float = 1.0,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningOperator]:
    """Run ``kubechat operator`` on ``kubeconfig``'s API with metrics and health on free
    127.0.0.1 ports (plus ``extra_args``); return once both answer. Stopped (SIGTERM) when the
    block ends, unless it has ended already (a test may kill ``process``)."""
    metrics_port, health_port = _two_free_ports()
    argv = kubechat_argv(
        "operator",
        f"--namespace={namespace}",
        f"--reconcile-interval={reconcile_interval}",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--health-host=127.0.0.1",
        f"--health-port={health_port}",
        *extra_args,
    )
    operator = RunningOperator(f"127.0.0.1:{metrics_port}", f"127.0.0.1:{health_port}", log_path)
    env = {"KUBECONFIG": str(kubeconfig)}
    with running(
        argv, ready_url=operator.metrics_url, log_path=log_path, timeout=timeout, env=env
    ) as proc:
        operator.process = proc
        try:
            wait_http(operator.health_url, timeout, proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- log {log_path} ---\n{tail(log_path)}") from exc
        yield operator


def create_model_deployment(
    kubeconfig: Path, name: str = "demo", namespace: str = "default", replicas: int = 1
) -> dict[str, Any]:
    """Create examples/demo-cluster.yaml's ModelDeployment (renamed) with the official client."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["replicas"] = replicas
    api = kubernetes.client.CustomObjectsApi(kubernetes_client(kubeconfig))
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
