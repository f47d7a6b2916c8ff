"""The rendered chart applied with kubectl to the Kubernetes API emulator; the operator started
with the chart's own arguments reconciles the chart's ModelDeployment into a worker pod that runs
as the chart's worker account, is selected by the chart's NetworkPolicy, and serves through a
gateway started with the chart's arguments and the API key from the chart's Secret."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.chart.chart_tools import CHART, arg_value, one, render, render_text
from tests.support.kube_server import RunningEmulator, running_emulator
from tests.support.kube_tools import run_kubectl
from tests.support.pod_runner import PodRunner
from tests.support.processes import free_port, kubechat_argv, running, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = "Which mountain is the second highest one in the world?"
VALUES = """
modelNamespace: default
gateway: {auth: {keys: [sk-chart-test-key, sk-second-chart-key], protectMetrics: true}}
operator: {reconcileInterval: 0.5, leaseRenewInterval: 0.5, leaseDuration: 2, drainGrace: 3}
modelDeployments:
  - name: demo
    spec:
      model: {path: "kubechat:demo", names: [kubechat-demo], trustRemoteCode: true}
      resources: {gpus: 0}
      replicas: 1
"""


@dataclass
class Installed:
    emulator: RunningEmulator
    docs: list[dict]
    gateway: str
    operator_metrics: str
    operator_health: str
    values: Path

    def kubectl(self, *args: str) -> str:
        return run_kubectl(self.emulator.kubeconfig, *args).stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))


_OPERATOR_PORTS = ("--metrics-host=", "--metrics-port=", "--health-host=", "--health-port=")


def _container_args(docs: list[dict], role: str) -> list[str]:
    deployment = one(docs, "Deployment", f"-{role}")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture(scope="module")
def installed(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("chart-emulator")
    values = base / "values.yaml"
    values.write_text(VALUES)
    rendered = render_text(values, namespace="default")
    (base / "rendered.yaml").write_text(rendered)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    with running_emulator(crds=[CHART / "crds" / "modeldeployment.yaml"], directory=base) as emu:
        run_kubectl(emu.kubeconfig, "apply", "--validate=false", "-f", str(base / "rendered.yaml"))
        env = {"KUBECONFIG": str(emu.kubeconfig)}
        # No kubelet runs the chart's Deployments here: start their commands with their args
        # (their listening ports moved to free ones on 127.0.0.1).
        metrics_port = free_port()
        while (health_port := free_port()) == metrics_port:
            pass
        operator_argv = kubechat_argv(
            *[a for a in _container_args(docs, "operator") if not a.startswith(_OPERATOR_PORTS)],
            "--metrics-host=127.0.0.1",
            f"--metrics-port={metrics_port}",
            "--health-host=127.0.0.1",
            f"--health-port={health_port}",
        )
        key_file = base / "api-keys"
        secret = json.loads(
            run_kubectl(
                emu.kubeconfig, "get", "secret", "kc-kubechat-api-keys", "-o", "json"
            ).stdout
        )
        key_file.write_text(base64.b64decode(secret["data"]["api-keys"]).decode())
        port = free_port()
        gateway_args = [
            f"--api-key-file={key_file}" if a.startswith("--api-key-file=") else a
            for a in _container_args(docs, "gateway")
            if not a.startswith(("--host=", "--port="))
        ]
        gateway_argv = kubechat_argv(*gateway_args, "--host=127.0.0.1", f"--port={port}")
        runner = PodRunner(
            emu.kubeconfig,
            path_map={"/var/cache/kubechat": str(demo_model_dir.parent)},
            log_dir=base / "pods",
            stop_grace=10.0,
        )
        with (
            runner,
            running(
                operator_argv,
                ready_url=f"http://127.0.0.1:{metrics_port}/metrics",
                log_path=base / "operator.log",
                env=env,
            ),
            running(
                gateway_argv,
                ready_url=f"http://127.0.0.1:{port}/health",
                log_path=base / "gateway.log",
                env=env,
            ),
        ):
            yield Installed(
                emu,
                docs,
                f"http://127.0.0.1:{port}",
                f"http://127.0.0.1:{metrics_port}",
                f"http://127.0.0.1:{health_port}",
                values,
            )


def test_chart_objects_are_stored(installed: Installed) -> None:
    names = set(installed.kubectl("get", "deployments", "-o", "name").split())
    assert names == {f"deployment.apps/kc-kubechat-{r}" for r in ("operator", "gateway", "ui")}
    assert installed.get("serviceaccount", "kubechat-worker")["metadata"]["name"]
    md = installed.get("modeldeployment", "demo")
    assert md["spec"]["model"]["names"] == ["kubechat-demo"]


@pytest.fixture(scope="module")
def worker_pod(installed: Installed) -> dict:
    """The worker pod the operator made for the chart's ModelDeployment, once it is Ready."""

    def ready_pods():
        pods = installed.get("pods", "-l", "kubechat.dev/deployment=demo")["items"]
        return [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]

    (pod,) = until(ready_pods, 300, 0.3, "a ready worker pod for the chart's ModelDeployment")
    return pod


def test_operator_reconciles_the_charts_model_deployment(
    installed: Installed, worker_pod: dict
) -> None:
    assert worker_pod["spec"]["serviceAccountName"] == "kubechat-worker"
    policy = one(installed.docs, "NetworkPolicy", "-workers")
    selector = ",".join(f"{k}={v}" for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    selected = installed.get("pods", "-l", selector)["items"]
    assert [p["metadata"]["name"] for p in selected] == [worker_pod["metadata"]["name"]]
    lease = installed.get("lease", worker_pod["metadata"]["name"])
    assert lease["metadata"]["labels"]["kubechat.dev/deployment"] == "demo"

    def status() -> dict:
        return installed.get("modeldeployment", "demo").get("status", {})

    until(lambda: status().get("readyReplicas") == 1, 60, 0.3, "status.readyReplicas == 1")
    assert status()["phase"] == "Running"


def test_gateway_from_the_chart_answers_with_the_charts_key(
    installed: Installed, worker_pod: dict
) -> None:
    body = {
        "model": "kubechat-demo",
        "messages": [{"role": "user", "content": SEED}],
        "temperature": 0,
        "max_tokens": 16,
    }
    url = f"{installed.gateway}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401

    def answer():
        response = httpx.post(
            url, json=body, headers={"Authorization": "Bearer sk-chart-test-key"}, timeout=60
        )
        return response if response.status_code == 200 else None

    response = until(answer, 60, 0.3, "the gateway finds the worker")
    assert response.json()["choices"][0]["message"]["content"].startswith("K2")
    assert arg_value(_container_args(installed.docs, "gateway"), "--lease-store") == (
        "kubernetes:default"
    )


def test_operator_answers_the_charts_probes_and_counts_its_reconciles(
    installed: Installed, worker_pod: dict
) -> None:
    container = one(installed.docs, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    for probe in ("livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{installed.operator_health}{path}", timeout=10).status_code == 200
    metrics = httpx.get(f"{installed.operator_metrics}/metrics", timeout=10).text
    (ok,) = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('kubechat_operator_reconciles_total{result="ok"}')
    ]
    assert ok >= 1


def test_the_service_monitor_scrapes_protected_metrics_with_the_charts_secret(
    installed: Installed,
) -> None:
    """With metrics protected, the ServiceMonitor's credentials (from the Secret the chart
    stored) open the gateway's /metrics, which refuses a scrape without them."""
    docs = render(
        installed.values, sets=("metrics.serviceMonitor.enabled=true",), namespace="default"
    )
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"]["type"] == "Bearer"
    credentials = endpoint["authorization"]["credentials"]
    secret = installed.get("secret", credentials["name"])
    token = base64.b64decode(secret["data"][credentials["key"]]).decode()
    url = f"{installed.gateway}{endpoint['path']}"
    assert httpx.get(url, timeout=10).status_code == 401
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert scraped.status_code == 200 and "kubechat_gateway_requests_total" in scraped.text
