"""Deleting a ModelDeployment leaves no Lease behind, even where garbage collection never comes:
the real operator (its finalizer handler) on an API emulator with garbage collection off, a
worker's own Lease writer renewing while its pod drains, and a Lease no worker record can be
read from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from kubechat.discovery.kube_store import KubernetesLeaseStore
from kubechat.discovery.records import WorkerRecord
from tests.support.kube_operator import (
    GROUP,
    PLURAL,
    VERSION,
    create_model_deployment,
    running_operator,
)
from tests.support.kube_server import RunningEmulator, kubernetes_client, running_emulator
from tests.support.processes import until

CRD = Path(__file__).resolve().parents[2] / "crds" / "modeldeployment.yaml"
LABEL = "kubechat.dev/deployment"


@pytest.fixture
def no_gc(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running_emulator(crds=[CRD], directory=tmp_path, garbage_collection=False) as handle:
        yield handle


def beat(name: str, *, draining: bool = False) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        deployment="gone",
        models=("gone",),
        address="http://127.0.0.1:8000",
        ready=not draining,
        draining=draining,
        in_flight=0,
        queued=0,
        capacity=4,
        renew_time=time.time(),
        lease_duration=6.0,
    )


def test_deleting_a_deployment_leaves_no_lease_without_garbage_collection(
    no_gc: RunningEmulator, tmp_path: Path
) -> None:
    api = kubernetes_client(no_gc.kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    leases = kubernetes.client.CoordinationV1Api(api)

    def labelled_leases() -> list[str]:
        items = leases.list_namespaced_lease("default", label_selector=f"{LABEL}=gone").items
        return sorted(lease.metadata.name for lease in items)

    def pod_list() -> list:
        return core.list_namespaced_pod("default", label_selector=f"{LABEL}=gone").items

    with running_operator(no_gc.kubeconfig, tmp_path / "operator.log"):
        create_model_deployment(no_gc.kubeconfig, name="gone", replicas=1)
        (pod,) = until(pod_list, 30, 0.1, "the operator creates the worker pod")
        name = pod.metadata.name
        # the kubelet binds it (its deletion is then graceful) and the worker starts renewing
        core.patch_namespaced_pod(name, "default", {"spec": {"nodeName": "node-1"}})
        core.patch_namespaced_pod_status(name, "default", {"status": {"phase": "Running"}})
        writer = KubernetesLeaseStore("default", api_client=api, pod_name=name)
        writer.publish(beat(name))
        junk = {"metadata": {"name": "gone-junk", "labels": {LABEL: "gone"}}, "spec": {}}
        leases.create_namespaced_lease("default", junk)  # no worker annotations at all
        assert labelled_leases() == sorted(["gone-junk", name])

        kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "gone"
        )
        until(lambda: pod_list()[0].metadata.deletion_timestamp, 30, 0.1, "the pod is deleting")
        until(lambda: not labelled_leases(), 30, 0.1, "the operator deletes every labelled lease")

        # SIGTERM: the worker drains; its draining beats must not bring the lease back
        writer.publish(beat(name, draining=True))
        writer.publish(beat(name, draining=True))
        assert labelled_leases() == []

        # a renewal that raced the SIGTERM recreates it: the finalizer stays while the pod is
        # there, and the handler's next try (reconcile interval 1 s) deletes the lease again
        writer.publish(beat(name))
        assert labelled_leases() == [name]
        until(lambda: not labelled_leases(), 30, 0.1, "a later try deletes the recreated lease")
        custom = kubernetes.client.CustomObjectsApi(api)
        assert custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]

        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)  # the kubelet is done
        until(
            lambda: (
                not custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]
            ),
            30,
            0.1,
            "the finalizer is released once no pod is left",
        )
        assert labelled_leases() == []
