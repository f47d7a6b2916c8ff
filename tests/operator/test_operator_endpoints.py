"""``kubechat operator`` as a real process on the emulated API: /metrics counts its reconcile
passes (every series there from the start), /healthz is kopf's liveness endpoint, and bad port
flags are usage errors."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes
import pytest

from kubechat.operator.metrics import RESULTS, OperatorMetrics
from tests.support.kube_operator import (
    GROUP,
    PLURAL,
    VERSION,
    RunningOperator,
    create_model_deployment,
    running_operator,
)
from tests.support.kube_server import RunningEmulator, kubernetes_client
from tests.support.processes import kubechat_argv, until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def operator(
    emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The operator with metrics and health on free ports, before any ModelDeployment exists."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(emulator.kubeconfig, log, reconcile_interval=0.5) as op:
        yield op


def test_series_exist_at_zero_before_any_reconcile(operator: RunningOperator) -> None:
    samples = operator.samples()
    for result in RESULTS:
        assert (("kubechat_operator_reconciles_total", (("result", result),))) in samples
    assert samples[("kubechat_operator_errors_total", ())] == 0


def test_health_endpoint_answers(operator: RunningOperator) -> None:
    response = httpx.get(operator.health_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


def test_reconciles_are_counted(operator: RunningOperator, emulator: RunningEmulator) -> None:
    create_model_deployment(emulator.kubeconfig, name="metrics-demo")
    # The create handler, then the 0.5 s timer: several passes, none failing.
    assert operator.wait_for_reconciles(2) >= 2
    assert operator.value("kubechat_operator_reconciles_total", result="error") == 0
    assert operator.value("kubechat_operator_errors_total") == 0
    count = operator.value("kubechat_operator_reconcile_duration_seconds_count")
    assert count is not None and count >= 2


def test_a_spec_that_cannot_be_served_counts_as_invalid(
    operator: RunningOperator, emulator: RunningEmulator
) -> None:
    create_model_deployment(emulator.kubeconfig, name="metrics-invalid")
    # Accepted by the CRD schema, refused by kubechat: a per-GPU memory cap without GPUs.
    kubernetes.client.CustomObjectsApi(
        kubernetes_client(emulator.kubeconfig)
    ).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "metrics-invalid",
        {"spec": {"resources": {"gpus": 0, "maxGpuMemory": "1GiB"}}},
    )
    assert operator.wait_for_reconciles(1, result="invalid") >= 1
    assert operator.value("kubechat_operator_errors_total") == 0


def test_wanted_models_are_exported_until_their_deployment_goes(
    operator: RunningOperator, emulator: RunningEmulator
) -> None:
    """What the "no live worker" alert joins with the gateway's live workers."""
    custom = kubernetes.client.CustomObjectsApi(kubernetes_client(emulator.kubeconfig))
    create_model_deployment(emulator.kubeconfig, name="metrics-wanted", replicas=2)
    where = {"deployment_namespace": "default", "deployment": "metrics-wanted"}

    def exported() -> tuple[float | None, float | None]:
        return (
            operator.value("kubechat_operator_deployment_replicas", **where),
            operator.value(
                "kubechat_operator_deployment_model_info", **where, model="kubechat-demo"
            ),
        )

    until(lambda: exported() == (2, 1), timeout=30, interval=0.2)
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "metrics-wanted",
        {"spec": {"replicas": 0, "model": {"names": ["renamed"]}}},
    )
    until(
        lambda: (
            operator.value("kubechat_operator_deployment_replicas", **where) == 0
            and operator.value("kubechat_operator_deployment_model_info", **where, model="renamed")
            and exported()[1] is None
        ),
        timeout=30,
        interval=0.2,
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "metrics-wanted")
    until(
        lambda: (
            not [key for key in operator.samples() if ("deployment", "metrics-wanted") in key[1]]
        ),
        timeout=30,
        interval=0.2,
    )


def test_a_failing_pass_counts_as_an_error() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(RuntimeError), metrics.reconcile():
        raise RuntimeError("the API server went away")
    with metrics.reconcile() as outcome:
        outcome[0] = "invalid"
    value = metrics.registry.get_sample_value
    assert value("kubechat_operator_reconciles_total", {"result": "error"}) == 1
    assert value("kubechat_operator_reconciles_total", {"result": "invalid"}) == 1
    assert value("kubechat_operator_reconciles_total", {"result": "ok"}) == 0
    assert value("kubechat_operator_errors_total") == 1
    assert value("kubechat_operator_reconcile_duration_seconds_count") == 2


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--metrics-port=-1"], "--metrics-port must be between 0 (off) and 65535"),
        (["--health-port=70000"], "--health-port must be between 0 (off) and 65535"),
        (["--metrics-port=9100", "--health-port=9100"], "must differ"),
        (["--metrics-port=http"], "invalid int value"),
    ],
)
def test_bad_port_flags_are_usage_errors(args: list[str], complaint: str, tmp_path: Path) -> None:
    result = subprocess.run(
        kubechat_argv("operator", *args), capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr
