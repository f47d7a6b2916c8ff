"""The Kubernetes lease store against the API emulator: a worker's Lease (owned by its pod,
labelled with its deployment) and discovery that joins Leases with their pods' readiness."""

from __future__ import annotations

import asyncio
import time

import kubernetes
import kubernetes_validate
import pytest

from kubechat.discovery.kube_store import KubernetesLeaseStore
from kubechat.discovery.live import LiveView
from kubechat.discovery.records import WorkerRecord
from tests.support.processes import until, until_async


def make_pod(api: kubernetes.client.ApiClient, name: str, deployment: str) -> dict:
    core = kubernetes.client.CoreV1Api(api)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"kubechat.dev/deployment": deployment}},
        "spec": {"containers": [{"name": "worker", "image": "kubechat"}]},
    }
    return api.sanitize_for_serialization(core.create_namespaced_pod("default", body))


def set_ready(api: kubernetes.client.ApiClient, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        name, "default", {"status": {"phase": "Running", "conditions": [condition]}}
    )


def record(name: str, deployment: str, **kw) -> WorkerRecord:
    fields = {
        "name": name,
        "deployment": deployment,
        "models": ("m",),
        "address": f"http://{name}:8000",
        "ready": True,
        "draining": False,
        "in_flight": 0,
        "queued": 0,
        "capacity": 4,
        "renew_time": time.time(),
        "lease_duration": 3.0,
        **kw,
    }
    return WorkerRecord(**fields)


def test_worker_lease_is_owned_by_its_pod_and_updated_on_renewal(api) -> None:
    pod = make_pod(api, "w1-pod", "store-a")
    store = KubernetesLeaseStore("default", api_client=api, pod_name="w1-pod")
    leases = kubernetes.client.CoordinationV1Api(api)

    store.publish(record("w1-pod", "store-a", renew_time=1_800_000_000.0))
    store.publish(record("w1-pod", "store-a", renew_time=1_800_000_002.0, in_flight=2))
    lease = api.sanitize_for_serialization(leases.read_namespaced_lease("w1-pod", "default"))
    assert lease["metadata"]["labels"]["kubechat.dev/deployment"] == "store-a"
    (owner,) = lease["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "w1-pod", pod["metadata"]["uid"])
    kubernetes_validate.validate(lease, "1.34.0", strict=True)
    again = WorkerRecord.from_lease(lease)
    assert (again.renew_time, again.in_flight) == (1_800_000_002.0, 2)

    store.remove("w1-pod")
    store.remove("w1-pod")  # already gone: no error
    with pytest.raises(kubernetes.client.ApiException) as missing:
        leases.read_namespaced_lease("w1-pod", "default")
    assert missing.value.status == 404


def test_lease_goes_with_its_pod(api) -> None:
    make_pod(api, "w2-pod", "store-b")
    KubernetesLeaseStore("default", api_client=api, pod_name="w2-pod").publish(
        record("w2-pod", "store-b")
    )
    kubernetes.client.CoreV1Api(api).delete_namespaced_pod("w2-pod", "default")
    leases = kubernetes.client.CoordinationV1Api(api)
    until(
        lambda: (
            not leases.list_namespaced_lease(
                "default", label_selector="kubechat.dev/deployment=store-b"
            ).items
        ),
        timeout=10,
        interval=0.05,
        what="the lease of a deleted pod is gone",
    )


async def test_discovery_joins_pod_readiness_and_follows_changes(api) -> None:
    for name in ("r1", "r2"):
        make_pod(api, name, "store-c")
        KubernetesLeaseStore("default", api_client=api, pod_name=name).publish(
            record(name, "store-c", lease_duration=30.0)
        )
    set_ready(api, "r1", True)
    reader = KubernetesLeaseStore("default", api_client=api, relist_seconds=2.0)
    view = LiveView(reader)
    await view.start()
    try:

        def live() -> list[str]:
            return [r.name for r in view.workers() if r.deployment == "store-c"]

        async def wait_for(names: list[str]) -> None:
            await until_async(lambda: live() == names, 10, 0.05, f"live workers {names}")

        # r2's lease says ready but its pod is not Ready: not routable
        await wait_for(["r1"])
        statuses = {s.record.name: s.reason for s in view.all_workers()}
        assert statuses["r2"] == "not ready"
        set_ready(api, "r2", True)
        await wait_for(["r1", "r2"])
        set_ready(api, "r1", False)
        await wait_for(["r2"])
        kubernetes.client.CoordinationV1Api(api).delete_namespaced_lease("r2", "default")
        await wait_for([])
    finally:
        await view.stop()


async def test_a_worker_that_stops_renewing_leaves_within_its_lease_duration(api) -> None:
    make_pod(api, "s1", "store-d")
    set_ready(api, "s1", True)
    writer = KubernetesLeaseStore("default", api_client=api, pod_name="s1")
    writer.publish(record("s1", "store-d", lease_duration=1.0))
    reader = KubernetesLeaseStore("default", api_client=api, relist_seconds=30.0)
    view = LiveView(reader)
    await view.start()
    try:
        assert [r.name for r in view.workers() if r.deployment == "store-d"] == ["s1"]
        await asyncio.sleep(1.3)  # no renewal, no API event: the lease expired all the same
        assert [r.name for r in view.workers() if r.deployment == "store-d"] == []
        statuses = {s.record.name: s.reason for s in view.all_workers()}
        assert statuses["s1"].startswith("heartbeat lost")
    finally:
        await view.stop()


def test_draining_worker_is_not_routable(api) -> None:
    make_pod(api, "d1", "store-e")
    set_ready(api, "d1", True)
    writer = KubernetesLeaseStore("default", api_client=api, pod_name="d1")
    writer.publish(record("d1", "store-e"))
    writer.publish(record("d1", "store-e", draining=True))
    reader = KubernetesLeaseStore("default", api_client=api)
    reader.refresh()
    (mine,) = [r for r in reader.snapshot() if r.deployment == "store-e"]
    assert (mine.ready, mine.draining) == (True, True)
    assert LiveView(reader).workers() == []


def test_a_relist_forgets_workers_whose_delete_event_was_missed(api) -> None:
    """What the periodic re-list is for: a watch that dropped a DELETED event must not keep
    a gone worker in the table."""
    for name in ("m1", "m2"):
        make_pod(api, name, "store-f")
        set_ready(api, name, True)
        KubernetesLeaseStore("default", api_client=api, pod_name=name).publish(
            record(name, "store-f", lease_duration=30.0)
        )
    reader = KubernetesLeaseStore("default", api_client=api)  # not started: no watch at all
    reader.refresh()
    assert [r.name for r in LiveView(reader).workers() if r.deployment == "store-f"] == [
        "m1",
        "m2",
    ]
    kubernetes.client.CoordinationV1Api(api).delete_namespaced_lease("m1", "default")
    set_ready(api, "m2", False)
    reader.refresh()
    assert [r.name for r in reader.snapshot() if r.deployment == "store-f"] == ["m2"]
    assert [r.name for r in LiveView(reader).workers() if r.deployment == "store-f"] == []


async def test_discovery_starts_while_the_api_is_unreachable_and_catches_up(tmp_path) -> None:
    from tests.support.kube_server import kubernetes_client, running_emulator

    config = kubernetes.client.Configuration()
    config.host = "http://127.0.0.1:9"  # nothing listens on the discard port
    reader = KubernetesLeaseStore(
        "default", api_client=kubernetes.client.ApiClient(config), relist_seconds=1.0
    )
    await reader.start()
    try:
        assert reader.snapshot() == []
        with running_emulator(directory=tmp_path) as handle:
            api = kubernetes_client(handle.kubeconfig)
            make_pod(api, "late", "store-g")
            set_ready(api, "late", True)
            KubernetesLeaseStore("default", api_client=api, pod_name="late").publish(
                record("late", "store-g", lease_duration=30.0)
            )
            config.host = handle.base_url  # the API server answers from now on
            await until_async(
                lambda: [r.name for r in LiveView(reader).workers()] == ["late"],
                10,
                0.1,
                "the reader catching up",
            )
    finally:
        await reader.stop()


async def test_a_reader_cut_off_from_the_api_keeps_its_last_view_and_relists_on_reconnect(
    api, emulator
) -> None:
    """A gateway that cannot reach the API server cannot see renewals either: judged by the
    clock alone, every lease would expire and all traffic stop although the workers are fine.
    The view is kept as it was last seen (``outage_grace`` long at most); events missed meanwhile
    (a worker gone, one added) are caught up by the re-list after the reconnect."""
    for name, duration in (("keep", 1.0), ("gone", 30.0)):
        make_pod(api, name, "store-h")
        set_ready(api, name, True)
        KubernetesLeaseStore("default", api_client=api, pod_name=name).publish(
            record(name, "store-h", lease_duration=duration)
        )
    keep = KubernetesLeaseStore("default", api_client=api, pod_name="keep")
    views = [
        LiveView(KubernetesLeaseStore("default", api_client=api, relist_seconds=30.0)),
        LiveView(
            KubernetesLeaseStore("default", api_client=api, relist_seconds=30.0, outage_grace=0)
        ),
    ]

    def live() -> list[list[str]]:
        return [[r.name for r in v.workers() if r.deployment == "store-h"] for v in views]

    def renew() -> None:
        keep.publish(record("keep", "store-h", lease_duration=1.0))

    for view in views:
        await view.start()
    heal = emulator.call(
        emulator.emulator.partition,
        lambda raw: raw.query.get("labelSelector") == "kubechat.dev/deployment",
    )
    try:
        assert live() == [["gone", "keep"]] * 2
        # unseen by the readers: "keep" renews, "gone" goes (its lease with it), "new" comes
        kubernetes.client.CoreV1Api(api).delete_namespaced_pod("gone", "default")
        make_pod(api, "new", "store-h")
        set_ready(api, "new", True)
        KubernetesLeaseStore("default", api_client=api, pod_name="new").publish(
            record("new", "store-h", lease_duration=30.0)
        )
        for _ in range(3):
            await asyncio.sleep(0.5)
            renew()
        # as last seen, 1.5 s after "keep" would have expired; with outage_grace=0, by the clock
        assert live() == [["gone", "keep"], ["gone"]]

        emulator.call(heal)
        deadline = time.monotonic() + 5
        while live() != [["keep", "new"]] * 2:
            assert time.monotonic() < deadline, live()
            renew()
            await asyncio.sleep(0.1)
    finally:
        emulator.call(heal)
        for view in views:
            await view.stop()
