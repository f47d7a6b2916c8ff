"""The whole Kubernetes stack for end-to-end tests: the API emulator, the real operator (which a
test may kill and start again), the test kubelet running real workers on the demo model, and the
gateway discovering them through Pods and Leases; plus what the tests ask of it::

    with kube_stack(demo_model_dir, tmp_path) as cluster:
        cluster.kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
        until(cluster.ready_pods, what="a ready worker")  # tests.support.processes.until

Lease timings are short (renewed every 0.5 s, 2 s long) so that faults show within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes

from tests.support.kube_operator import RunningOperator, running_operator
from tests.support.kube_server import RunningEmulator, kubernetes_client, running_emulator
from tests.support.kube_tools import run_kubectl
from tests.support.pod_runner import PodRunner
from tests.support.processes import free_port, kubechat_argv, running

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modeldeployment.yaml"
EXAMPLE = ROOT / "examples" / "demo-cluster.yaml"
SEED = "Which mountain is the second highest one in the world?"
MODEL = "kubechat-demo"
LEASE_RENEW, LEASE_DURATION = 0.5, 2.0
LABEL = "kubechat.dev/deployment=demo"
TEMPLATE_HASH = "kubechat.dev/template-hash"
OPERATOR_ARGS = (
    "--lease-renew-interval",
    str(LEASE_RENEW),
    "--lease-duration",
    str(LEASE_DURATION),
    "--lease-grace",
    "30",
    "--drain-grace",
    "3",
)


def is_ready(pod: Any) -> bool:
    """Whether a pod (official client model) is Ready and not being deleted."""
    return not pod.metadata.deletion_timestamp and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


@dataclass
class Cluster:
    """A running stack and the clients to look at it."""

    emulator: RunningEmulator
    core: kubernetes.client.CoreV1Api
    leases: kubernetes.client.CoordinationV1Api
    custom: kubernetes.client.CustomObjectsApi
    runner: PodRunner
    gateway: str
    base: Path
    operators: contextlib.ExitStack = field(repr=False, default_factory=contextlib.ExitStack)
    operator: RunningOperator | None = None

    def kubectl(self, *args: str, **kw: Any) -> str:
        """Run kubectl on the emulator; its stdout."""
        return run_kubectl(self.emulator.kubeconfig, *args, **kw).stdout

    def md(self, name: str = "demo") -> dict[str, Any]:
        """The ModelDeployment as the API returns it."""
        return self.custom.get_namespaced_custom_object(
            "kubechat.dev", "v1alpha1", "default", "modeldeployments", name
        )

    def md_gone(self, name: str = "demo") -> bool:
        """Whether the ModelDeployment no longer exists."""
        try:
            self.md(name)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    def ready_replicas(self) -> int | None:
        """``status.readyReplicas`` of the ModelDeployment."""
        return self.md().get("status", {}).get("readyReplicas")

    def pods(self) -> list[Any]:
        """The demo deployment's worker pods, terminating ones included."""
        return self.core.list_namespaced_pod("default", label_selector=LABEL).items

    def ready_pods(self) -> list[str]:
        """Names of the Ready worker pods that are not being deleted."""
        return [p.metadata.name for p in self.pods() if is_ready(p)]

    def lease_names(self) -> set[str]:
        """Names of the demo deployment's worker Leases."""
        items = self.leases.list_namespaced_lease("default", label_selector=LABEL).items
        return {lease.metadata.name for lease in items}

    def start_operator(self) -> RunningOperator:
        """Start ``kubechat operator`` (again); it is stopped with the stack."""
        self.operator = self.operators.enter_context(
            running_operator(
                self.emulator.kubeconfig,
                self.base / "operator.log",
                reconcile_interval=0.5,
                extra_args=OPERATOR_ARGS,
            )
        )
        return self.operator

    def kill_operator(self) -> None:
        """SIGKILL the operator's process group, as an OOM kill or a node loss would."""
        process = self.operator.process if self.operator else None
        assert process is not None, "no operator was started"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    # ---- the gateway --------------------------------------------------------------------------
    def ask(self, **kw: Any) -> httpx.Response:
        """The seed question through the gateway (greedy; ``kw`` adds to the request body)."""
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": SEED}],
            "temperature": 0,
            **kw,
        }
        return httpx.post(f"{self.gateway}/v1/chat/completions", json=body, timeout=60)

    def ask_streaming(self, max_tokens: int = 8) -> tuple[str, str]:
        """A streamed chat request through the gateway: (worker that served it, problem or "")."""
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": SEED}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        url = f"{self.gateway}/v1/chat/completions"
        try:
            with httpx.stream("POST", url, json=body, timeout=60) as response:
                worker = response.headers.get("x-kubechat-worker", "")
                if response.status_code != 200:
                    return worker, f"{response.status_code} {response.read()[:200]!r}"
                lines = [line for line in response.iter_lines() if line.startswith("data:")]
        except httpx.HTTPError as exc:
            return "", repr(exc)
        if not lines or lines[-1] != "data: [DONE]":
            return worker, f"stream did not end with [DONE]: {lines[-2:]}"
        errors = [line for line in lines[:-1] if "error" in json.loads(line[5:])]
        return worker, f"error event: {errors[0]}" if errors else ""

    def metric_samples(self) -> list[tuple[str, str]]:
        """The gateway's /metrics as (series with labels, value) pairs."""
        text = httpx.get(f"{self.gateway}/metrics", timeout=5).text
        return [
            tuple(line.rsplit(" ", 1))  # type: ignore[misc]
            for line in text.splitlines()
            if line and not line.startswith("#")
        ]

    def live_workers(self) -> int:
        """``kubechat_gateway_live_workers`` of the demo model (0 without the series)."""
        series = f'kubechat_gateway_live_workers{{model="{MODEL}"}}'
        return next((int(float(v)) for s, v in self.metric_samples() if s == series), 0)

    def routable_workers(self) -> set[str]:
        """Workers the gateway routes to now (each live one has an in-flight series)."""
        return _labelled(self.metric_samples(), "kubechat_gateway_worker_in_flight")

    def known_workers(self) -> set[str]:
        """Every worker the gateway knows of, live or not (each has a heartbeat age series)."""
        return _labelled(self.metric_samples(), "kubechat_gateway_worker_heartbeat_age_seconds")

    def models(self) -> list[str]:
        """The model ids on the gateway's /v1/models."""
        data = httpx.get(f"{self.gateway}/v1/models", timeout=5).json()["data"]
        return [m["id"] for m in data]


def _labelled(samples: list[tuple[str, str]], name: str) -> set[str]:
    prefix = f'{name}{{worker="'
    return {s[len(prefix) :].split('"', 1)[0] for s, _ in samples if s.startswith(prefix)}


@contextlib.contextmanager
def kube_stack(demo_model_dir: Path, base: Path) -> Iterator[Cluster]:
    """Run the stack with logs in ``base`` (operator.log, gateway.log, pods/); stop it all after."""
    with running_emulator(crds=[CRD], directory=base) as emulator:
        port = free_port()
        gateway_argv = kubechat_argv(
            "gateway", "--port", str(port), "--lease-store", "kubernetes:default"
        )
        runner = PodRunner(
            emulator.kubeconfig,
            # the pods' cache volume is this run's kubechat cache, which holds the demo model
            path_map={"/var/cache/kubechat": str(demo_model_dir.parent)},
            log_dir=base / "pods",
            stop_grace=10.0,
        )
        api = kubernetes_client(emulator.kubeconfig)
        operators = contextlib.ExitStack()
        with (
            runner,
            operators,
            running(
                gateway_argv,
                ready_url=f"http://127.0.0.1:{port}/health",
                log_path=base / "gateway.log",
                env={"KUBECONFIG": str(emulator.kubeconfig)},
            ),
        ):
            cluster = Cluster(
                emulator,
                kubernetes.client.CoreV1Api(api),
                kubernetes.client.CoordinationV1Api(api),
                kubernetes.client.CustomObjectsApi(api),
                runner,
                f"http://127.0.0.1:{port}",
                base,
                operators,
            )
            cluster.start_operator()
            yield cluster
