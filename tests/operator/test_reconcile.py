"""Reconcile decisions from observed pods and leases: scale, roll, replace, never drop serving."""

from __future__ import annotations

from kubechat.discovery.records import WorkerRecord
from kubechat.operator.reconcile import ObservedPod, decide

NOW = 1_800_000_000.0
NEW, OLD = "newhash", "oldhash"


def pod(
    name: str, *, template: str = NEW, ready: bool = True, age: float = 100, **kw
) -> ObservedPod:
    return ObservedPod(
        name=name, template_hash=template, ready=ready, phase="Running", created=NOW - age, **kw
    )


def lease(name: str, *, age: float = 0.5, in_flight: int = 0) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        deployment="demo",
        models=("m",),
        address=f"http://{name}:8000",
        ready=True,
        draining=False,
        in_flight=in_flight,
        queued=0,
        capacity=5,
        renew_time=NOW - age,
        lease_duration=6.0,
    )


def leases(*pods: ObservedPod, **overrides: WorkerRecord) -> dict[str, WorkerRecord]:
    out = {p.name: lease(p.name) for p in pods}
    out.update(overrides)
    return out


def test_creates_the_missing_replicas() -> None:
    d = decide(3, NEW, [pod("a")], leases(pod("a")), now=NOW)
    assert (d.create, d.delete) == (2, [])


def test_steady_state_does_nothing() -> None:
    pods = [pod("a"), pod("b")]
    d = decide(2, NEW, pods, leases(*pods), now=NOW)
    assert (d.create, d.delete) == (0, [])


def test_scale_down_removes_not_ready_then_least_loaded() -> None:
    pods = [pod("a"), pod("b"), pod("c", ready=False)]
    busy = leases(*pods, a=lease("a", in_flight=4), b=lease("b", in_flight=1))
    assert decide(2, NEW, pods, busy, now=NOW).delete == ["c"]
    assert decide(1, NEW, pods, busy, now=NOW).delete == ["c", "b"]


def test_rolling_update_surges_one_and_keeps_every_old_pod_until_it_is_ready() -> None:
    old = [pod("a", template=OLD), pod("b", template=OLD)]
    d = decide(2, NEW, old, leases(*old), now=NOW)
    assert (d.create, d.delete) == (1, [])
    starting = [*old, pod("c", ready=False, age=1)]
    d = decide(2, NEW, starting, leases(*starting), now=NOW)
    assert (d.create, d.delete) == (0, []), "no old pod goes while the new one is not ready"
    ready = [*old, pod("c")]
    d = decide(2, NEW, ready, leases(*ready), now=NOW)
    assert len(d.delete) == 1 and d.delete[0] in ("a", "b")
    assert d.create == 1, "the next surge pod starts as the old one drains"


def test_rolling_never_leaves_fewer_ready_than_replicas() -> None:
    """Simulate a roll step by step: ready pods never drop below the replica count."""
    pods = {n: pod(n, template=OLD) for n in ("a", "b", "c")}
    counter = 0
    for _ in range(20):
        d = decide(3, NEW, list(pods.values()), leases(*pods.values()), now=NOW)
        for name in d.delete:
            del pods[name]
        assert sum(p.ready for p in pods.values()) >= 3
        for name in list(pods):  # pods created in the last step become ready now
            pods[name] = pod(name, template=pods[name].template_hash)
        for _ in range(d.create):
            counter += 1
            pods[f"n{counter}"] = pod(f"n{counter}", ready=False, age=0)
        if all(p.template_hash == NEW and p.ready for p in pods.values()) and len(pods) == 3:
            break
    assert sorted(p.template_hash for p in pods.values()) == [NEW] * 3


def test_ready_pod_with_a_stale_lease_is_replaced() -> None:
    pods = [pod("a"), pod("b")]
    stale = leases(*pods, b=lease("b", age=30))
    d = decide(2, NEW, pods, stale, now=NOW)
    assert d.delete == ["b"] and d.heartbeat_lost == ["b"]
    assert d.create == 1


def test_a_lease_just_expired_is_not_yet_a_reason_to_replace_the_pod() -> None:
    pods = [pod("a")]
    late = leases(*pods, a=lease("a", age=10))  # expired (6 s lease): no traffic, pod kept
    assert decide(1, NEW, pods, late, now=NOW, heartbeat_timeout=30).delete == []
    gone = leases(*pods, a=lease("a", age=31))
    assert decide(1, NEW, pods, gone, now=NOW, heartbeat_timeout=30).heartbeat_lost == ["a"]


def test_ready_pod_without_any_lease_gets_a_grace_period() -> None:
    young, old = pod("a", age=10), pod("b", age=500)
    d = decide(2, NEW, [young, old], {}, now=NOW, lease_grace=60)
    assert d.heartbeat_lost == ["b"]


def test_not_ready_pod_with_a_stale_lease_is_left_to_the_kubelet() -> None:
    pods = [pod("a", ready=False)]
    d = decide(1, NEW, pods, leases(*pods, a=lease("a", age=30)), now=NOW)
    assert (d.create, d.delete) == (0, [])


def test_failed_pod_is_deleted_and_replaced() -> None:
    pods = [ObservedPod("a", NEW, ready=False, phase="Failed", created=NOW - 5)]
    d = decide(1, NEW, pods, {}, now=NOW)
    assert (d.create, d.delete) == (1, ["a"])


def test_terminating_pods_are_not_counted() -> None:
    pods = [pod("a", terminating=True), pod("b")]
    d = decide(2, NEW, pods, leases(*pods), now=NOW)
    assert (d.create, d.delete) == (1, [])


def test_observed_pod_reads_a_pod_dict() -> None:
    p = ObservedPod.from_pod(
        {
            "metadata": {
                "name": "demo-x",
                "labels": {"kubechat.dev/template-hash": NEW},
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"restartCount": 3, "lastState": {"terminated": {"exitCode": 1}}}
                ],
            },
        }
    )
    assert (p.name, p.template_hash, p.ready, p.restarts, p.last_exit_code) == (
        "demo-x",
        NEW,
        False,
        3,
        1,
    )
