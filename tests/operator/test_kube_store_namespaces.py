"""Discovery across namespaces on the API emulator: a reader of several namespaces (one list +
watch pair each) or of all of them (``kubernetes:*``, one cluster-wide list + watch) sees the
workers of a multi-namespace or cluster-wide operator, and follows their changes."""

from __future__ import annotations

import time

import kubernetes
import pytest

from kubechat.discovery.kube_store import ALL_NAMESPACES, KubernetesLeaseStore
from kubechat.discovery.live import LiveView
from kubechat.discovery.records import WorkerRecord
from kubechat.discovery.stores import open_store
from tests.support.processes import until_async

LABEL = "kubechat.dev/deployment"


def worker(api, namespace: str, name: str, deployment: str, *, ready: bool = True) -> None:
    """A worker pod in ``namespace`` (Ready or not) with its lease, as a worker writes it."""
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": {LABEL: deployment}},
            "spec": {"containers": [{"name": "worker", "image": "kubechat"}]},
        },
    )
    set_ready(api, namespace, name, ready)
    record = WorkerRecord(
        name=name,
        deployment=deployment,
        models=(deployment,),
        address=f"http://{name}.{namespace}:8000",
        ready=True,
        draining=False,
        in_flight=0,
        queued=0,
        capacity=4,
        renew_time=time.time(),
        lease_duration=30.0,
    )
    KubernetesLeaseStore(namespace, api_client=api, pod_name=name).publish(record)


def set_ready(api, namespace: str, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        name, namespace, {"status": {"phase": "Running", "conditions": [condition]}}
    )


def seen(store: KubernetesLeaseStore, deployment: str) -> dict[str, bool]:
    """address -> ready of the deployment's records in a snapshot."""
    return {r.address: r.ready for r in store.snapshot() if r.deployment == deployment}


def test_store_forms_name_their_namespaces() -> None:
    assert open_store("kubernetes:*", reader=True).scopes == [None]
    assert open_store("kubernetes:team-a,team-b", reader=True).scopes == ["team-a", "team-b"]
    both = open_store("kubernetes:team-a,team-b")
    assert both.namespace == "team-a"  # a writer writes in the first
    assert open_store("kubernetes:team-a").scopes == ["team-a"]
    for bad in ("kubernetes:Team_A", "kubernetes:a,,*", "kubernetes:,"):
        with pytest.raises(ValueError, match="namespace"):
            open_store(bad)


def test_readers_see_the_namespaces_they_watch_and_only_those(api) -> None:
    worker(api, "team-a", "w-a", "ns-list")
    worker(api, "team-b", "w-b", "ns-list")
    worker(api, "team-c", "w-c", "ns-list")
    everywhere = KubernetesLeaseStore(read_namespaces=[ALL_NAMESPACES], api_client=api)
    two = KubernetesLeaseStore(read_namespaces=["team-a", "team-b"], api_client=api)
    one = KubernetesLeaseStore("team-a", api_client=api)
    for store in (everywhere, two, one):
        store.refresh()
    assert set(seen(everywhere, "ns-list")) == {
        "http://w-a.team-a:8000",
        "http://w-b.team-b:8000",
        "http://w-c.team-c:8000",
    }
    assert set(seen(two, "ns-list")) == {"http://w-a.team-a:8000", "http://w-b.team-b:8000"}
    assert set(seen(one, "ns-list")) == {"http://w-a.team-a:8000"}


def test_a_pod_is_joined_with_the_lease_of_its_own_namespace(api) -> None:
    """The same pod name in two namespaces: each lease takes its own pod's readiness."""
    worker(api, "team-a", "twin", "ns-twins", ready=True)
    worker(api, "team-b", "twin", "ns-twins", ready=False)
    store = KubernetesLeaseStore(read_namespaces=[ALL_NAMESPACES], api_client=api)
    store.refresh()
    assert seen(store, "ns-twins") == {
        "http://twin.team-a:8000": True,
        "http://twin.team-b:8000": False,
    }


@pytest.mark.parametrize("namespaces", [[ALL_NAMESPACES], ["team-a", "team-b"]], ids=str)
async def test_watches_follow_workers_in_every_namespace(api, namespaces: list[str]) -> None:
    deployment = f"ns-watch-{len(namespaces)}"
    worker(api, "team-a", f"{deployment}-a", deployment)
    view = LiveView(KubernetesLeaseStore(read_namespaces=namespaces, api_client=api))
    await view.start()
    try:

        async def wait_for(names: set[str]) -> None:
            await until_async(
                lambda: {r.name for r in view.workers() if r.deployment == deployment} == names,
                10,
                0.05,
                f"live workers {names}",
            )

        await wait_for({f"{deployment}-a"})
        worker(api, "team-b", f"{deployment}-b", deployment)  # arrives through team-b's watch
        await wait_for({f"{deployment}-a", f"{deployment}-b"})
        set_ready(api, "team-a", f"{deployment}-a", False)
        await wait_for({f"{deployment}-b"})
        kubernetes.client.CoordinationV1Api(api).delete_namespaced_lease(
            f"{deployment}-b", "team-b"
        )
        await wait_for(set())
    finally:
        await view.stop()
