"""Real kubectl against the emulated API: the commands the project's docs and tests use."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from tests.kube.common import PROJECT_CRD, eventually
from tests.support.kube_crds import stub_crd
from tests.support.kube_tools import ensure_helm, ensure_kubectl, run_kubectl

WIDGET = """
apiVersion: test.kubechat.dev/v1
kind: Widget
metadata:
  name: w
spec:
  replicas: 1
  colour: red
"""


def kubectl(cluster, *args: str, stdin: str | None = None) -> str:
    return run_kubectl(cluster.kubeconfig, *args, input=stdin).stdout


def table(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_builtin_resources_resolve(cluster):
    output = kubectl(cluster, "get", "pods,leases,events,namespaces", "-A")
    assert "default" in output


def test_create_apply_label_patch_replace_delete(cluster):
    assert "created" in kubectl(cluster, "create", "--validate=false", "-f", "-", stdin=WIDGET)
    kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=WIDGET.replace("red", "green"))
    kubectl(cluster, "label", "widget", "w", "team=chat")
    kubectl(
        cluster,
        "patch",
        "wd",
        "w",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
    )
    widget = json.loads(kubectl(cluster, "get", "wd", "w", "-o", "json"))
    assert widget["spec"]["colour"] == "green"
    assert widget["metadata"]["labels"] == {"team": "chat"}
    assert widget["metadata"]["generation"] == 2
    assert widget["status"]["conditions"][0]["status"] == "True"

    widget["spec"]["colour"] = "blue"
    kubectl(cluster, "replace", "--validate=false", "-f", "-", stdin=json.dumps(widget))
    assert kubectl(cluster, "get", "wd", "w", "-o", "jsonpath={.spec.colour}") == "blue"

    kubectl(cluster, "delete", "wd", "w")
    assert "No resources found" in run_kubectl(cluster.kubeconfig, "get", "wd").stderr


def test_get_shows_the_crd_printer_columns(cluster):
    kubectl(cluster, "create", "--validate=false", "-f", "-", stdin=WIDGET)
    kubectl(
        cluster,
        "patch",
        "wd",
        "w",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
    )
    header, row = table(kubectl(cluster, "get", "wd"))
    assert header == ["NAME", "SIZE", "COLOUR", "READY", "AGE"]
    assert row[:4] == ["w", "1", "red", "True"]
    assert row[4].endswith("s")


@pytest.mark.skipif(not PROJECT_CRD.exists(), reason="crds/modeldeployment.yaml not written yet")
def test_get_md_shows_the_project_crd_printer_columns(cluster):
    crd = yaml.safe_load(PROJECT_CRD.read_text())
    kubectl(cluster, "apply", "--validate=false", "-f", str(PROJECT_CRD))
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    md = {
        "apiVersion": f"{crd['spec']['group']}/{version['name']}",
        "kind": crd["spec"]["names"]["kind"],
        "metadata": {"name": "demo"},
        "spec": {"model": {"path": "kubechat:demo"}, "replicas": 2, "resources": {"gpus": 0}},
    }
    kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=json.dumps(md))

    header, row = table(kubectl(cluster, "get", "md"))

    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert header == ["NAME", *columns]
    assert row[0] == "demo"
    assert row[columns.index("REPLICAS") + 1] == "2"


def test_scale_goes_through_the_scale_subresource(cluster):
    kubectl(cluster, "create", "--validate=false", "-f", "-", stdin=WIDGET)
    assert "scaled" in kubectl(cluster, "scale", "wd/w", "--replicas=3")
    assert kubectl(cluster, "get", "wd", "w", "-o", "jsonpath={.spec.replicas}") == "3"
    scale = json.loads(
        kubectl(
            cluster, "get", "--raw", "/apis/test.kubechat.dev/v1/namespaces/default/widgets/w/scale"
        )
    )
    assert scale["spec"]["replicas"] == 3
    methods = [
        method
        for method, path, _ in cluster.emulator.api_log
        if path.split("?")[0].endswith("/scale")
    ]
    assert methods and set(methods) <= {"GET", "PATCH", "PUT"}


def test_get_watch_prints_events_as_they_happen(cluster):
    watcher = subprocess.Popen(
        [
            str(ensure_kubectl()),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--cache-dir={cluster.kubeconfig.parent / 'kubectl-cache'}",
            "get",
            "wd",
            "-w",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(lambda: cluster.emulator.open_watches, timeout=20)
        kubectl(cluster, "create", "--validate=false", "-f", "-", stdin=WIDGET)
        kubectl(cluster, "scale", "wd/w", "--replicas=2")
        kubectl(cluster, "delete", "wd", "w")
        time.sleep(1.0)
    finally:
        watcher.terminate()
        output, errors = watcher.communicate(timeout=10)
    events = [line.split()[:3] for line in output.strip().splitlines()[1:]]
    assert events == [["ADDED", "w", "1"], ["MODIFIED", "w", "2"], ["DELETED", "w", "2"]], errors


@pytest.mark.skipif(not PROJECT_CRD.exists(), reason="crds/modeldeployment.yaml not written yet")
def test_explain_reads_the_crd_schema(cluster):
    crd = yaml.safe_load(PROJECT_CRD.read_text())
    kubectl(cluster, "apply", "--validate=false", "-f", str(PROJECT_CRD))
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]

    explained = kubectl(cluster, "explain", "md.spec")

    assert f"KIND:       {crd['spec']['names']['kind']}" in explained
    assert " ".join(spec_schema["description"].split()) in " ".join(explained.split())
    for field in spec_schema.get("properties", {}):
        assert f"  {field}\t<" in explained


def test_helm_template_piped_to_kubectl_apply(cluster, tmp_path):
    helm = str(ensure_helm())
    subprocess.run([helm, "create", str(tmp_path / "demo")], check=True, capture_output=True)
    rendered = subprocess.run(
        [helm, "template", "demo", str(tmp_path / "demo"), "--set", "ingress.enabled=true"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}

    applied = kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=rendered)

    assert applied.count(" created") == len([d for d in yaml.safe_load_all(rendered) if d])
    assert {"Deployment", "Service", "ServiceAccount", "Ingress"} <= kinds
    listed = kubectl(cluster, "get", "deploy,svc,sa,ing", "-o", "name")
    assert "deployment.apps/demo" in listed and "ingress.networking.k8s.io/demo" in listed


def test_third_party_kinds_apply_once_stubbed(cluster):
    servicemonitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "gateway"},
        "spec": {"endpoints": [{"port": "http"}]},
    }
    refused = run_kubectl(
        cluster.kubeconfig,
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(servicemonitor),
        check=False,
    )
    assert refused.returncode != 0 and "ServiceMonitor" in refused.stderr

    cluster.register_crd(stub_crd("monitoring.coreos.com", "v1", "ServiceMonitor"))

    kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=json.dumps(servicemonitor))
    assert kubectl(cluster, "get", "servicemonitors", "-o", "name") == (
        "servicemonitor.monitoring.coreos.com/gateway\n"
    )
