"""The chart's vLLM parts: the operator's vLLM image (pinned by digest when given) and the
InferencePools (off by default) over the workers of the deployments listed."""

from __future__ import annotations

import pytest

from kubechat.defaults import WORKER_PORT
from kubechat.vllm_plan import DEFAULT_VLLM_IMAGE
from tests.chart.chart_tools import CHART, arg_value, find, helm, one, render

DIGEST = "sha256:" + "b" * 64


def operator_args(docs: list[dict]) -> list[str]:
    return one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_operator_gets_the_vllm_image_of_the_values() -> None:
    assert arg_value(operator_args(render()), "--vllm-image") == DEFAULT_VLLM_IMAGE
    pinned = render(sets=(f"vllm.image.digest={DIGEST}",))
    assert arg_value(operator_args(pinned), "--vllm-image") == (
        f"docker.io/vllm/vllm-openai@{DIGEST}"
    )


def test_no_inference_pool_by_default() -> None:
    assert find(render(), "InferencePool") == []


def test_inference_pool_selects_a_deployments_workers() -> None:
    docs = render(
        sets=(
            "inferencePool.enabled=true",
            "inferencePool.deployments={chat,baichuan-13b-chat-vllm}",
            "inferencePool.endpointPicker.name=kubechat-epp",
            "modelNamespace=models",
        )
    )
    pools = {p["metadata"]["name"]: p for p in find(docs, "InferencePool")}
    assert sorted(pools) == ["baichuan-13b-chat-vllm", "chat"]
    pool = pools["chat"]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["metadata"]["namespace"] == "models"
    # the label the operator puts on a deployment's worker pods, and the port they serve on
    assert pool["spec"]["selector"]["matchLabels"] == {"kubechat.dev/deployment": "chat"}
    assert pool["spec"]["targetPorts"] == [{"number": WORKER_PORT}]
    assert pool["spec"]["endpointPickerRef"] == {
        "name": "kubechat-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (("inferencePool.enabled=true",), "needs inferencePool.endpointPicker.name"),
        (("vllm.image.digest=latest",), "digest"),
        (("inferencePool.endpointPicker.failureMode=Maybe",), "failureMode"),
    ],
)
def test_bad_vllm_values_are_refused(sets: tuple[str, ...], says: str) -> None:
    args = ["template", "t", str(CHART)]
    for pair in sets:
        args += ["--set", pair]
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert says in result.stderr
