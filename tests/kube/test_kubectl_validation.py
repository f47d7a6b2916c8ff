"""kubectl's default validation against the emulated API: ``kubectl apply`` without
``--validate=false`` asks the server to validate strictly (kubectl finds the ``fieldValidation``
parameter in ``/openapi/v3``), so a custom resource with a field its CRD does not declare is
refused, as by a real API server, instead of pruned."""

from __future__ import annotations

import json

import pytest

from tests.kube.common import PROJECT_CRD
from tests.support.kube_server import RunningEmulator
from tests.support.kube_tools import run_kubectl

DEMO = {
    "apiVersion": "kubechat.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "demo"},
    "spec": {"model": {"path": "kubechat:demo"}, "replicas": 1},
}


@pytest.fixture
def with_crd(cluster: RunningEmulator) -> RunningEmulator:
    """The emulator after ``kubectl apply -f crds/modeldeployment.yaml`` (default validation)."""
    applied = run_kubectl(cluster.kubeconfig, "apply", "-f", str(PROJECT_CRD))
    crd = "customresourcedefinition.apiextensions.k8s.io/modeldeployments.kubechat.dev"
    assert applied.stdout.strip() == f"{crd} created"
    return cluster


def test_apply_validates_on_the_server_and_accepts_a_valid_resource(
    with_crd: RunningEmulator,
) -> None:
    created = run_kubectl(with_crd.kubeconfig, "apply", "-f", "-", input=json.dumps(DEMO))
    assert created.stdout.strip() == "modeldeployment.kubechat.dev/demo created"
    again = run_kubectl(with_crd.kubeconfig, "apply", "-f", "-", input=json.dumps(DEMO))
    assert again.stdout.strip() == "modeldeployment.kubechat.dev/demo unchanged"
    strict = [path for method, path, _ in with_crd.emulator.api_log if method == "POST"]
    assert any("fieldValidation=Strict" in path for path in strict), strict


@pytest.mark.parametrize("existing", [False, True], ids=["create", "patch"])
def test_an_unknown_field_is_refused_with_its_path(
    with_crd: RunningEmulator, existing: bool
) -> None:
    if existing:
        run_kubectl(with_crd.kubeconfig, "apply", "-f", "-", input=json.dumps(DEMO))
    typo = {**DEMO, "spec": {**DEMO["spec"], "replica": 3}}

    refused = run_kubectl(
        with_crd.kubeconfig, "apply", "-f", "-", input=json.dumps(typo), check=False
    )

    assert refused.returncode == 1
    assert 'strict decoding error: unknown field "spec.replica"' in refused.stderr
    stored = run_kubectl(with_crd.kubeconfig, "get", "md", "-o", "name", check=False).stdout
    assert stored.strip() == ("modeldeployment.kubechat.dev/demo" if existing else "")


def test_validate_false_prunes_the_unknown_field_as_the_api_server_does(
    with_crd: RunningEmulator,
) -> None:
    typo = {**DEMO, "spec": {**DEMO["spec"], "replica": 3}}
    run_kubectl(with_crd.kubeconfig, "apply", "--validate=false", "-f", "-", input=json.dumps(typo))
    stored = json.loads(run_kubectl(with_crd.kubeconfig, "get", "md", "demo", "-o", "json").stdout)
    assert "replica" not in stored["spec"] and stored["spec"]["replicas"] == 1
