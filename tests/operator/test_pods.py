"""Worker pods rendered from the shared plan: valid Kubernetes objects with what a cluster needs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubechat.discovery.records import WorkerRecord
from kubechat.load_failure import TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH
from kubechat.manifests import load_manifests
from kubechat.operator.pods import PodSettings, pod_name, render_pod
from kubechat.plan import plan_deployment
from kubechat.spec import parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
OWNER = {"name": "baichuan-13b-chat", "uid": "0b1c2d3e-0000-4000-8000-000000000001"}


def baichuan_pod() -> dict:
    (md,) = load_manifests([ROOT / "examples" / "baichuan.yaml"])
    plan = plan_deployment(md)
    return render_pod(plan.workers[0], pod_name(md.name, plan.template_hash), OWNER, PodSettings())


@pytest.mark.parametrize("version", ["1.29.0", "1.34.0"])
def test_pod_validates_strictly(version: str) -> None:
    kubernetes_validate.validate(baichuan_pod(), version, strict=True)


def test_pod_has_what_a_gpu_worker_needs() -> None:
    pod = baichuan_pod()
    (md,) = load_manifests([ROOT / "examples" / "baichuan.yaml"])
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": str(md.spec.resources.gpus)}
    args = container["args"]
    assert args[args.index("--max-gpu-memory") + 1] == "20GiB"
    assert "--trust-remote-code" in args
    assert args[args.index("--lease-store") + 1] == "kubernetes"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * 10 >= 3600
    # the worker writes why it failed to the termination-message file, at the path the pod
    # gives it; one that dies without writing it leaves its log tail (FallbackToLogsOnError)
    message_path = container["terminationMessagePath"]
    assert env[TERMINATION_MESSAGE_ENV]["value"] == message_path == TERMINATION_MESSAGE_PATH
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims and claims[0]["persistentVolumeClaim"]["readOnly"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["terminationGracePeriodSeconds"] > PodSettings().drain_grace
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "ModelDeployment",
        OWNER["uid"],
        True,
    )
    labels = pod["metadata"]["labels"]
    assert labels["kubechat.dev/deployment"] == md.name
    assert labels["app.kubernetes.io/component"] == "worker"


def test_pod_runs_as_the_images_user() -> None:
    """The pod's user is the Dockerfile's, so the image's cache folder stays writable."""
    user = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    uid, _, gid = user.partition(":")
    context = baichuan_pod()["spec"]["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid or uid)


def test_lease_body_validates_strictly() -> None:
    record = WorkerRecord(
        name="demo-abc123-xyz12",
        deployment="demo",
        models=("kubechat-demo",),
        address="http://10.0.0.5:8000",
        ready=True,
        draining=False,
        in_flight=1,
        queued=0,
        capacity=5,
        renew_time=1_800_000_000.25,
        lease_duration=6.0,
    )
    kubernetes_validate.validate(record.to_lease("default"), "1.34.0", strict=True)


def test_example_manifests_parse() -> None:
    for path in (ROOT / "examples").glob("*.yaml"):
        if path.name == "bad.yaml":  # wrong on purpose (the README's invalid manifest)
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "ModelDeployment"
        assert load_manifests([path])


SCHEDULED = {
    "resources": {"gpus": 1, "cpu": "4", "memory": "32Gi", "cpuLimit": "8"},
    "scheduling": {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "value": "yes", "effect": "NoExecute", "tolerationSeconds": 120},
        ],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"kubechat.dev/deployment": "scheduled"}
                            },
                        },
                    }
                ]
            }
        },
        "priorityClassName": "inference-high",
    },
}


def scheduled_pod(settings: PodSettings) -> dict:
    body = {
        "apiVersion": "kubechat.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scheduled"},
        "spec": {"model": {"path": "org/model"}, **SCHEDULED},
    }
    plan = plan_deployment(parse_model_deployment(body))
    return render_pod(plan.workers[0], pod_name("scheduled", plan.template_hash), OWNER, settings)


@pytest.mark.parametrize("version", ["1.29.0", "1.34.0"])
def test_scheduling_sizing_and_pull_secrets_reach_the_pod(version: str) -> None:
    pod = scheduled_pod(PodSettings(image_pull_secrets=("registry-a", "registry-b")))
    kubernetes_validate.validate(pod, version, strict=True)
    spec = pod["spec"]
    scheduling = SCHEDULED["scheduling"]
    assert spec["nodeSelector"] == scheduling["nodeSelector"]
    assert spec["tolerations"] == scheduling["tolerations"]
    assert spec["affinity"] == scheduling["affinity"]
    assert spec["priorityClassName"] == "inference-high"
    assert spec["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "32Gi"}
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}


def test_a_pod_without_scheduling_has_none_of_its_fields() -> None:
    spec = baichuan_pod()["spec"]
    for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert field not in spec
    assert "imagePullSecrets" not in spec


def test_the_operator_flag_names_the_pull_secrets() -> None:
    import argparse

    from kubechat.operator.command import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--worker-image-pull-secret=a", "--worker-image-pull-secret", "b"])
    assert args.worker_image_pull_secret == ["a", "b"]


def test_the_pod_runs_the_worker_with_the_operators_settings() -> None:
    """The container's command line parses with the worker's own flags, and carries the pod's
    port, the Kubernetes lease store and the operator's lease and drain settings."""
    import argparse

    from kubechat.worker.command import configure

    settings = PodSettings(drain_grace=45, lease_renew_interval=0.5, lease_duration=2.0)
    container = scheduled_pod(settings)["spec"]["containers"][0]
    assert container["command"][-1] == "worker"
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(container["args"])
    assert (args.host, args.port) == ("0.0.0.0", container["ports"][0]["containerPort"])
    assert args.lease_store == "kubernetes" and args.worker_name is None  # $POD_NAME
    assert (args.lease_renew_interval, args.lease_duration, args.drain_grace) == (0.5, 2.0, 45.0)
    assert (args.model_path, args.deployment) == ("org/model", "scheduled")
