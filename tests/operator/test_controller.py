"""Reconcile passes against the API emulator: what lands in the cluster, the status and the
events, with pods made Ready (or failed) by hand and leases written as workers write them.

A new Controller for each pass plays an operator restarted between passes: nothing may depend
on memory of earlier passes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import kubernetes
import pytest
import yaml

from kubechat.discovery.kube_store import KubernetesLeaseStore
from kubechat.discovery.records import WorkerRecord
from kubechat.load_failure import LoadFailureReport
from kubechat.operator.controller import Controller, ControllerSettings
from kubechat.operator.kube import Cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo-cluster.yaml"
GROUP, VERSION, PLURAL = "kubechat.dev", "v1alpha1", "modeldeployments"


class Events(list):
    """Events the controller posts: (type, reason, message)."""

    def __call__(self, body, kind: str, reason: str, message: str) -> None:
        self.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self]


def create_md(api, name: str, replicas: int, **spec) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    body["spec"]["replicas"] = replicas
    body["spec"].update(spec)
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body
    )


def read_md(api, name: str) -> dict:
    return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name
    )


def patch_spec(api, name: str, spec: dict) -> None:
    kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name, {"spec": spec}
    )


def reconcile(api, name: str, events: Events | None = None) -> dict:
    """One pass by a freshly started operator."""
    controller = Controller(
        Cluster(api), ControllerSettings(lease_grace=60), events if events is not None else Events()
    )
    return controller.reconcile(read_md(api, name))


def pods(api, name: str) -> dict[str, dict]:
    items = Cluster(api).worker_pods("default", name)
    return {p["metadata"]["name"]: p for p in items}


def serve(api, pod: str, deployment: str, *, lease_age: float = 0.0, in_flight: int = 0) -> None:
    """Play a worker that loaded its model: pod Ready, lease renewed ``lease_age`` s ago,
    reporting ``in_flight`` requests."""
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        pod,
        "default",
        {
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.9",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )
    record = WorkerRecord(
        name=pod,
        deployment=deployment,
        models=("kubechat-demo",),
        address="http://10.0.0.9:8000",
        ready=True,
        draining=False,
        in_flight=in_flight,
        queued=0,
        capacity=4,
        renew_time=time.time() - lease_age,
        lease_duration=6.0,
    )
    KubernetesLeaseStore("default", api_client=api, pod_name=pod).publish(record)


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_create_and_scale_are_idempotent_across_restarts(api) -> None:
    create_md(api, "scale", 2)
    events = Events()
    reconcile(api, "scale", events)
    reconcile(api, "scale", events)
    created = pods(api, "scale")
    assert len(created) == 2, "a second pass (a restarted operator) creates nothing more"
    assert events.reasons().count("CreatedPod") == 2
    md = read_md(api, "scale")
    for pod in created.values():
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("ModelDeployment", md["metadata"]["uid"])

    status = reconcile(api, "scale")
    assert (status["phase"], status["readyReplicas"]) == ("Pending", 0)
    for name in created:
        serve(api, name, "scale")
    status = reconcile(api, "scale")
    assert (status["phase"], status["replicas"], status["readyReplicas"]) == ("Running", 2, 2)
    assert condition(status, "Available")["status"] == "True"
    assert status["selector"] == "kubechat.dev/deployment=scale"
    assert {w["pod"] for w in status["workers"]} == set(created)
    assert read_md(api, "scale")["status"]["observedGeneration"] == md["metadata"]["generation"]

    patch_spec(api, "scale", {"replicas": 1})
    reconcile(api, "scale")
    assert len(pods(api, "scale")) == 1
    cluster = Cluster(api)
    assert cluster.delete_workers("default", "scale") >= 1
    assert cluster.worker_pods("default", "scale") == []
    assert cluster.worker_leases("default", "scale") == {}


def test_rolling_update_survives_restarts_without_duplicates_or_losing_ready_workers(api) -> None:
    create_md(api, "roll", 2)
    reconcile(api, "roll")
    old = set(pods(api, "roll"))
    for name in old:
        serve(api, name, "roll")
    reconcile(api, "roll")
    patch_spec(api, "roll", {"worker": {"env": {"ROLL": "1"}}})

    generation = read_md(api, "roll")["metadata"]["generation"]
    for _ in range(12):
        status = reconcile(api, "roll")
        reconcile(api, "roll")  # a restart right after the pass changes nothing
        current = pods(api, "roll")
        assert len(current) <= 3, "one surge pod at a time"
        ready = [n for n, p in current.items() if (p.get("status") or {}).get("podIP")]
        assert len(ready) >= 2, "ready workers never drop below the replicas"
        if not set(current) & old and status["phase"] == "Running":
            break
        if status["phase"] != "Running":
            assert condition(status, "Progressing")["reason"] == "RollingUpdate"
        for name in set(current) - set(ready):  # the new pod loads its model
            serve(api, name, "roll")
    else:
        pytest.fail(f"the roll did not finish: {sorted(current)}")
    assert len(current) == 2
    assert status["observedGeneration"] == generation
    assert condition(status, "Progressing")["status"] == "False"
    Cluster(api).delete_workers("default", "roll")


def test_ready_pod_with_a_stale_lease_is_replaced(api) -> None:
    create_md(api, "stale", 1)
    reconcile(api, "stale")
    (hung,) = pods(api, "stale")
    serve(api, hung, "stale", lease_age=60)
    events = Events()
    status = reconcile(api, "stale", events)
    assert condition(status, "HeartbeatLost")["status"] == "True"
    assert hung in condition(status, "HeartbeatLost")["message"]
    assert ("Warning", "HeartbeatLost") in [(k, r) for k, r, _ in events]
    (replacement,) = pods(api, "stale")
    assert replacement != hung
    serve(api, replacement, "stale")
    status = reconcile(api, "stale")
    assert condition(status, "HeartbeatLost")["status"] == "False"
    assert status["phase"] == "Running"
    Cluster(api).delete_workers("default", "stale")


# termination messages as a worker writes them (kubechat/load_failure.py)
GPU_TOO_SMALL = LoadFailureReport(
    "InsufficientGpuMemory",
    "/models/big: the model's weights need 24.7 GiB in float16 but 1 GPU(s) capped at 20.0 GiB "
    "each (--max-gpu-memory 20GiB, 20.0 GiB in all) hold only 19.9 GiB of them",
).to_text()
REMOTE_CODE_BROKEN = LoadFailureReport(
    "RemoteCodeIncompatible",
    "could not load the tokenizer of /models/baichuan: TypeError: 'property' object cannot be "
    "interpreted as an integer (tokenization_baichuan.py, line 91, in get_vocab: ...)",
).to_text()


@pytest.mark.parametrize(
    ("name", "terminated", "reason", "words"),
    [
        (
            "broken",
            {"exitCode": 1, "reason": "Error", "message": "no such model"},
            "WorkerExited",
            "no such model",
        ),
        ("oom", {"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled", "exit code 137 (OOMKilled)"),
        (
            "small-gpu",
            {"exitCode": 1, "reason": "Error", "message": GPU_TOO_SMALL},
            "InsufficientGpuMemory",
            "GPU(s) capped at 20.0 GiB",
        ),
        (
            "remote-code",
            {"exitCode": 1, "reason": "Error", "message": REMOTE_CODE_BROKEN},
            "RemoteCodeIncompatible",
            "tokenization_baichuan.py, line 91",
        ),
    ],
)
def test_a_worker_that_cannot_load_its_model_shows_model_load_failed(
    api, name: str, terminated: dict, reason: str, words: str
) -> None:
    create_md(api, name, 1)
    reconcile(api, name)
    (pod,) = pods(api, name)
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        pod,
        "default",
        {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "image": "kubechat",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 2,
                        "lastState": {"terminated": terminated},
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    }
                ],
            }
        },
    )
    events = Events()
    status = reconcile(api, name, events)
    reconcile(api, name, events)
    assert status["phase"] == "Failed"
    failed = condition(read_md(api, name)["status"], "ModelLoadFailed")
    assert (failed["status"], failed["reason"]) == ("True", reason)
    assert words in failed["message"] and pod in failed["message"]
    assert events.reasons().count("ModelLoadFailed") == 1, "one event per transition"
    Cluster(api).delete_workers("default", name)


def test_invalid_spec_is_a_condition_and_touches_nothing(api) -> None:
    create_md(api, "invalid", 1, resources={"gpus": 0, "maxGpuMemory": "20GiB"})
    events = Events()
    status = reconcile(api, "invalid", events)
    reconcile(api, "invalid", events)
    assert pods(api, "invalid") == {}
    assert status["phase"] == "Failed"
    invalid = condition(read_md(api, "invalid")["status"], "InvalidSpec")
    assert invalid["status"] == "True"
    assert "spec.resources.maxGpuMemory" in invalid["message"]
    assert events.reasons() == ["InvalidSpec"], "one Warning, not one per pass"

    body = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])
    patch_spec(api, "invalid", {"resources": body["resources"] | {"maxGpuMemory": None}})
    status = reconcile(api, "invalid")
    assert condition(status, "InvalidSpec")["status"] == "False"
    assert len(pods(api, "invalid")) == 1
    Cluster(api).delete_workers("default", "invalid")


def test_status_of_an_invalid_spec_still_describes_the_pods(api) -> None:
    create_md(api, "stale-status", 2)
    reconcile(api, "stale-status")
    for name in pods(api, "stale-status"):
        serve(api, name, "stale-status")
    status = reconcile(api, "stale-status")
    assert (status["replicas"], status["readyReplicas"], len(status["workers"])) == (2, 2, 2)

    patch_spec(api, "stale-status", {"resources": {"gpus": 0, "maxGpuMemory": "20GiB"}})
    gone, kept = sorted(pods(api, "stale-status"))
    kubernetes.client.CoreV1Api(api).delete_namespaced_pod(gone, "default")
    reconcile(api, "stale-status")
    status = read_md(api, "stale-status")["status"]
    assert condition(status, "InvalidSpec")["status"] == "True"
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert [w["pod"] for w in status["workers"]] == [kept]
    assert condition(status, "Available")["status"] == "True", "the kept pod still serves"

    kubernetes.client.CoreV1Api(api).delete_namespaced_pod(kept, "default")
    reconcile(api, "stale-status")
    status = read_md(api, "stale-status")["status"]
    assert (status["replicas"], status["readyReplicas"], status["workers"]) == (0, 0, [])
    assert condition(status, "Available")["status"] == "False"
    Cluster(api).delete_workers("default", "stale-status")


def test_a_deployment_being_deleted_gets_no_new_pods(api) -> None:
    create_md(api, "going", 2)
    body = read_md(api, "going")
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    controller = Controller(Cluster(api), ControllerSettings(), Events())
    controller.reconcile(body)
    assert pods(api, "going") == {}


def status_writes(emulator, name: str) -> int:
    """PATCH requests the API has seen on the ModelDeployment's status subresource."""
    path = f"/modeldeployments/{name}/status"
    log = emulator.call(lambda: list(emulator.emulator.api_log))
    return sum(1 for method, where, _ in log if method == "PATCH" and path in where)


def test_status_is_written_when_it_changes_not_when_heartbeats_tick(api, emulator) -> None:
    create_md(api, "quiet", 1)
    controller = Controller(Cluster(api), ControllerSettings(lease_grace=60), Events())
    controller.reconcile(read_md(api, "quiet"))
    (pod,) = pods(api, "quiet")
    serve(api, pod, "quiet")
    controller.reconcile(read_md(api, "quiet"))
    assert read_md(api, "quiet")["status"]["readyReplicas"] == 1
    written = status_writes(emulator, "quiet")

    for _ in range(3):  # only the heartbeat moves: renewed again, its age changes
        serve(api, pod, "quiet", lease_age=1.5)
        controller.reconcile(read_md(api, "quiet"))
    assert status_writes(emulator, "quiet") == written

    patch_spec(api, "quiet", {"replicas": 2})  # something that matters: written at once
    controller.reconcile(read_md(api, "quiet"))
    assert status_writes(emulator, "quiet") == written + 1
    md = read_md(api, "quiet")
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]

    # a fresh operator writes on its first pass; and heartbeat-only changes wait their turn
    refreshing = Controller(
        Cluster(api), ControllerSettings(lease_grace=60, status_refresh=0.5), Events()
    )
    refreshing.reconcile(read_md(api, "quiet"))
    refreshing.reconcile(read_md(api, "quiet"))
    assert status_writes(emulator, "quiet") == written + 2
    time.sleep(0.6)
    refreshing.reconcile(read_md(api, "quiet"))
    assert status_writes(emulator, "quiet") == written + 3
    Cluster(api).delete_workers("default", "quiet")
