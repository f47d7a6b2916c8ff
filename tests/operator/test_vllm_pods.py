"""Worker pods of ``engine: vllm``: vLLM's own server and the kubechat agent, rendered from the
plan, valid for the API, created by the operator on the emulator."""

from __future__ import annotations

import argparse
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml

from kubechat.agent.command import configure as configure_agent
from kubechat.manifests import load_manifests
from kubechat.operator.pods import PodSettings, pod_name, render_pod
from kubechat.plan import plan_deployment
from kubechat.spec import GROUP, PLURAL, VERSION
from kubechat.vllm_plan import DEFAULT_VLLM_IMAGE, GPU_SHARE_LAUNCHER
from tests.operator.test_controller import Events, condition, pods, read_md, reconcile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "baichuan-vllm.yaml"
OWNER = {"name": "baichuan-13b-chat-vllm", "uid": "0b1c2d3e-0000-4000-8000-000000000002"}


def example_pod(settings: PodSettings | None = None, **vllm: object) -> dict:
    (md,) = load_manifests([EXAMPLE])
    if vllm:
        spec = md.spec.model_copy(update={"vllm": md.spec.vllm.model_copy(update=vllm)})
        md = md.model_copy(update={"spec": spec})
    plan = plan_deployment(md)
    name = pod_name(md.name, plan.template_hash)
    return render_pod(plan.workers[0], name, OWNER, settings or PodSettings())


@pytest.mark.parametrize("version", ["1.29.0", "1.34.0"])
def test_vllm_pod_validates_strictly(version: str) -> None:
    kubernetes_validate.validate(example_pod(), version, strict=True)


def test_vllm_serves_on_the_gpus_and_drains_after_the_lease() -> None:
    pod = example_pod()
    server, agent = pod["spec"]["containers"]
    assert (server["name"], agent["name"]) == ("vllm", "agent")
    assert server["image"] == DEFAULT_VLLM_IMAGE
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert "resources" not in agent or "limits" not in agent["resources"]
    command = server["command"]
    # maxGpuMemory 20GiB: the share of the GPU is worked out where the GPU is
    assert command[:4] == ["python3", "-c", GPU_SHARE_LAUNCHER, str(20 * 2**30)]
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert command[command.index("--port") + 1] == "8000"
    assert command[command.index("--shutdown-timeout") + 1] == str(PodSettings().drain_grace)
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert server["startupProbe"]["failureThreshold"] * 10 >= 3600
    sleep, seconds = server["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(seconds)
    assert sleep == "sleep"
    assert pause > 2  # longer than the agent's drain settle
    assert pod["spec"]["terminationGracePeriodSeconds"] >= PodSettings().drain_grace + pause
    assert {"name": "shm", "mountPath": "/dev/shm"} in server["volumeMounts"]


def test_agent_keeps_the_lease_and_answers_readiness() -> None:
    pod = example_pod()
    _, agent = pod["spec"]["containers"]
    assert agent["image"] == PodSettings().image
    assert agent["command"] == ["python", "-m", "kubechat.cli", "agent"]
    parser = argparse.ArgumentParser()
    configure_agent(parser)
    args = parser.parse_args(agent["args"])
    assert args.engine_url == "http://127.0.0.1:8000"
    assert (args.lease_store, args.host, args.port) == ("kubernetes", "0.0.0.0", 8001)
    assert (args.capacity, args.model_names) == (64, "baichuan-13b-chat")
    assert agent["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "agent"}
    env = {e["name"] for e in agent["env"]}
    assert {"POD_NAME", "POD_IP", "POD_NAMESPACE"} <= env


def test_images_come_from_the_operator_or_the_spec() -> None:
    pod = example_pod(PodSettings(vllm_image="registry.local/vllm@sha256:" + "a" * 64))
    assert pod["spec"]["containers"][0]["image"] == "registry.local/vllm@sha256:" + "a" * 64
    pod = example_pod(image="registry.local/vllm:custom")
    assert pod["spec"]["containers"][0]["image"] == "registry.local/vllm:custom"


def create(api, body: dict) -> None:
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body
    )


def test_operator_creates_the_two_container_pod_on_the_emulator(api) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": "vllm-md"}
    create(api, body)
    status = reconcile(api, "vllm-md")
    (pod,) = pods(api, "vllm-md").values()
    assert [c["name"] for c in pod["spec"]["containers"]] == ["vllm", "agent"]
    assert status["phase"] == "Pending"
    stored = read_md(api, "vllm-md")["spec"]
    assert (stored["engine"], stored["vllm"]["tensorParallelSize"]) == ("vllm", 2)


def test_tensor_parallel_not_dividing_the_gpus_is_invalid_spec(api) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": "vllm-bad"}
    body["spec"]["vllm"]["tensorParallelSize"] = 3
    create(api, body)
    events = Events()
    reconcile(api, "vllm-bad", events)
    assert pods(api, "vllm-bad") == {}
    invalid = condition(read_md(api, "vllm-bad")["status"], "InvalidSpec")
    assert invalid["status"] == "True"
    assert invalid["message"].startswith(
        "spec.vllm.tensorParallelSize: must divide resources.gpus (2): 3 does not"
    )
    assert events.reasons() == ["InvalidSpec"]
