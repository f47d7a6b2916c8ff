"""Every Grafana panel shows data: a real Prometheus scrapes a local ``kubechat up`` stack under
a short load and the real ``kubechat operator`` reconciling a ModelDeployment on the Kubernetes
API emulator, then each panel's PromQL (with Grafana's variables filled in) must return finite
values. The shipped alert rules are loaded by the same Prometheus and must evaluate cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from kubechat.discovery.local_store import LocalLeaseStore
from tests.chart.chart_tools import CHART, require_tool
from tests.chart.prometheus_server import Prometheus, run_prometheus
from tests.e2e.conftest import Stack, demo_cache, stop_stack
from tests.support.kube_operator import RunningOperator, create_model_deployment, running_operator
from tests.support.kube_server import running_emulator
from tests.support.processes import free_port, kubechat_argv, tail, until, wait_http

pytestmark = pytest.mark.slow

DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
MODEL = "kubechat-demo"
# Two one-slot workers: concurrent requests overflow a worker (429), so the gateway retries.
STACK_YAML = f"""
apiVersion: kubechat.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: demo
spec:
  model:
    path: "kubechat:demo"
    names: [{MODEL}]
    trustRemoteCode: true
  resources:
    gpus: 0
  replicas: 2
  worker:
    limitConcurrency: 1
---
# scaled to zero: the load's one request to it waits for its worker (held requests, cold start)
apiVersion: kubechat.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: demo-autoscaled
spec:
  model:
    path: "kubechat:demo"
    names: [{MODEL}-autoscaled]
    trustRemoteCode: true
  resources:
    gpus: 0
  autoscaling:
    minReplicas: 0
    maxReplicas: 1
"""


@dataclass
class LoadWindow:
    """When the load ran (unix seconds) and what the clients got back."""

    start: float
    end: float
    codes: dict[int, int]


def _start_stack(demo_model_dir: Path, base: Path) -> Stack:
    manifest = base / "demo-one-slot.yaml"
    manifest.write_text(STACK_YAML)
    port = free_port()
    state = base / "state"
    log = base / "up.log"
    env = {"KUBECHAT_CACHE": str(demo_cache(demo_model_dir)), "PYTHONUNBUFFERED": "1"}
    argv = kubechat_argv(
        "up", str(manifest), "--port", str(port), "--state-dir", str(state), "--no-ui"
    )

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    stack = Stack(f"http://127.0.0.1:{port}", state, proc, log)
    try:
        wait_http(f"{stack.url}/health", 240, proc)
        until(lambda: "ready." in log.read_text(), 240, 0.5, f"kubechat up:\n{tail(log)}")
    except Exception:
        stop_stack(proc)
        raise
    return stack


@pytest.fixture(scope="module")
def stack(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``kubechat up`` with two one-slot demo workers and the gateway (no UI)."""
    s = _start_stack(demo_model_dir, tmp_path_factory.mktemp("stack"))
    yield s
    stop_stack(s.proc)


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """``kubechat operator`` on the API emulator, reconciling a ModelDeployment every second
    (its worker pods stay API objects: no kubelet runs them, and the panels need none)."""
    base = tmp_path_factory.mktemp("operator")
    with (
        running_emulator(crds=[CHART / "crds" / "modeldeployment.yaml"], directory=base) as emu,
        running_operator(emu.kubeconfig, base / "operator.log", reconcile_interval=1) as op,
    ):
        create_model_deployment(emu.kubeconfig)
        op.wait_for_reconciles(1)
        yield op


@pytest.fixture(scope="module")
def prometheus(
    stack: Stack, operator: RunningOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping the gateway, both workers and the operator every second, with the
    alert rules."""
    binary = require_tool("prometheus", "apt-get install prometheus")
    workers = LocalLeaseStore(stack.state_dir / "leases").snapshot()
    assert len(workers) == 2
    jobs = {
        "kubechat-gateway": [stack.url.removeprefix("http://")],
        "kubechat-workers": [w.address.removeprefix("http://") for w in workers],
        "kubechat-operator": [operator.metrics_address],
    }
    folder = tmp_path_factory.mktemp("prometheus")
    with run_prometheus(binary, folder, jobs, [CHART / "files" / "alerts.yaml"]) as prom:
        until(
            lambda: (
                list(prom.targets_up().values()) == ["up"] * 4
                and prom.query("kubechat_worker_ready")
                and prom.query("kubechat_operator_reconciles_total")
            ),
            60,
            0.5,
            f"4 healthy targets: {prom.targets_up()}",
        )
        yield prom


def _chat(client: httpx.Client, stream: bool) -> int:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Which mountain is the second highest one?"}],
        "max_tokens": 12,
        "ignore_eos": True,
        "stream": stream,
    }
    if not stream:
        return client.post("/v1/chat/completions", json=body).status_code
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for _ in response.iter_bytes():
            pass
        return response.status_code


@pytest.fixture(scope="module")
def load(stack: Stack, prometheus: Prometheus) -> LoadWindow:
    """About 15 s of traffic: streamed and plain chats at concurrency 4, plus bad requests,
    and one request to the autoscaled model at zero workers (held until its worker is up)."""
    codes: dict[int, int] = {}
    start = time.time()
    cold = ThreadPoolExecutor(1)
    held = cold.submit(
        httpx.post,
        f"{stack.url}/v1/chat/completions",
        json={"model": f"{MODEL}-autoscaled", "messages": [{"role": "user", "content": "hi"}]},
        timeout=300,
    )
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        bad = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}
        for status in (
            client.post("/v1/chat/completions", json=bad).status_code,
            client.post("/v1/chat/completions", json={**bad, "model": "no-such"}).status_code,
        ):
            codes[status] = codes.get(status, 0) + 1
        with ThreadPoolExecutor(4) as pool:
            rounds = 0
            while time.monotonic() < deadline and rounds < 40:
                for status in pool.map(lambda i: _chat(client, i % 2 == 0), range(4)):
                    codes[status] = codes.get(status, 0) + 1
                rounds += 1
    assert held.result().status_code == 200, held.result().text
    cold.shutdown()
    end = time.time()
    time.sleep(3)  # one more scrape of the final counters
    return LoadWindow(start, end, codes)


def _panels() -> list[dict]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def _as_prometheus_query(expr: str) -> str:
    """Fill in what Grafana substitutes: the model variable (All) and the rate interval."""
    expr = expr.replace('model=~"$model"', 'model=~".*"').replace("$__rate_interval", "30s")
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


def test_load_got_answers_and_errors(load: LoadWindow) -> None:
    # Answers feed the latency and token panels; 400s and the one-slot workers' 429s (after
    # the gateway's retries) feed the error and retry panels.
    assert load.codes.get(200, 0) >= 20, load.codes
    assert load.codes.get(400, 0) >= 1 and load.codes.get(429, 0) >= 1, load.codes


@pytest.mark.parametrize("panel", _panels(), ids=lambda p: p["title"])
def test_panel_shows_data(panel: dict, prometheus: Prometheus, load: LoadWindow) -> None:
    # Gauges such as in-flight are non-zero only while requests run: look across the load.
    instants = [load.start + 2 + i * 2 for i in range(int((load.end - load.start) // 2))]
    instants.append(time.time())
    for target in panel["targets"]:
        expr = _as_prometheus_query(target["expr"])
        seen = [s for at in instants for s in prometheus.finite(expr, at)]
        assert seen, f"panel {panel['title']!r}: no data for {expr}"


def test_model_variable_lists_the_served_model(prometheus: Prometheus, load: LoadWindow) -> None:
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "model"]
    metric = re.fullmatch(r"label_values\((\w+), model\)", variable["definition"]).group(1)
    body = httpx.get(
        f"{prometheus.url}/api/v1/label/model/values", params={"match[]": metric}, timeout=10
    ).json()
    assert MODEL in body["data"]


def test_operator_panels_see_its_reconciles(prometheus: Prometheus, load: LoadWindow) -> None:
    # The reconciles panel splits by result: the passes over the demo ModelDeployment are "ok".
    rates = {
        s["metric"]["result"]: float(s["value"][1])
        for s in prometheus.finite(
            "sum by (result) (rate(kubechat_operator_reconciles_total[30s]))"
        )
    }
    assert rates.keys() >= {"ok", "error"} and rates["ok"] > 0 and rates["error"] == 0, rates


def test_alert_rules_evaluate_and_stay_quiet_on_a_healthy_stack(
    prometheus: Prometheus, load: LoadWindow
) -> None:
    rules = prometheus.rules()
    assert {r["name"] for r in rules} == {
        "KubechatNoLiveWorker",
        "KubechatHighErrorRatio",
        "KubechatHeartbeatLost",
        "KubechatHeldRequestTimedOut",
    }
    until(lambda: all(r.get("lastEvaluation") for r in prometheus.rules()), 10, 0.5, "rules run")
    for rule in prometheus.rules():
        assert rule["health"] == "ok", rule
    firing = {r["name"] for r in prometheus.rules() if r["state"] != "inactive"}
    assert "KubechatNoLiveWorker" not in firing
    assert "KubechatHeartbeatLost" not in firing


def test_dashboard_is_valid_grafana_json() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
    assert yaml.safe_load(json.dumps(DASHBOARD)) == DASHBOARD
