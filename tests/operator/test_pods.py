"""Worker pods rendered from the shared plan: valid Kubernetes objects with what a cluster needs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubechat.discovery.records import WorkerRecord
from kubechat.manifests import load_manifests
from kubechat.operator.pods import PodSettings, pod_name, render_pod
from kubechat.plan import plan_deployment

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
    # the log tail is the termination message: ModelLoadFailed then says why the worker exited
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
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "ModelDeployment"
        assert load_manifests([path])
