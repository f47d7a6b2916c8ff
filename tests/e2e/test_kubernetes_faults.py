"""Kubernetes-only faults, end to end on the API emulator (the stack of test_kubernetes.py: real
kubectl, the real operator, the test kubelet running real workers, the gateway on Pods+Leases).

- The operator is SIGKILLed twice in the middle of a rolling update and started again: the roll
  completes with exactly ``replicas`` new pods, no duplicate (never more than replicas + 1 pods
  at any sampled moment), no orphan pod or lease, and every streamed request through the gateway
  succeeds meanwhile.
- The gateway's watches break (a partition between it and the API server) while a worker pod is
  deleted and its replacement comes up: the deleted worker leaves routing, and once the gateway
  reconnects its re-list drops the deleted worker and makes the newcomer routable within a lease
  duration (production-stack #420/#1091 kept routing to dead pods after a watch reconnect).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import aiohttp.web
import pytest

from kubechat.discovery.kube_store import WORKER_SELECTOR
from tests.support.kube_stack import (
    EXAMPLE,
    LEASE_DURATION,
    MODEL,
    TEMPLATE_HASH,
    Cluster,
)
from tests.support.processes import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPLICAS = 2


def deploy(cluster: Cluster, replicas: int = REPLICAS) -> set[str]:
    """Apply the demo ModelDeployment with ``replicas`` and wait until the gateway routes to
    every one of its Ready pods; their names."""
    cluster.kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
    cluster.kubectl("scale", "md/demo", f"--replicas={replicas}")
    until(lambda: cluster.ready_replicas() == replicas, what=f"{replicas} ready")

    def all_routable() -> set[str]:
        ready = set(cluster.ready_pods())
        return ready if len(ready) == replicas and cluster.routable_workers() == ready else set()

    return until(all_routable, timeout=30, what="the gateway routes to every ready worker")


class Observer:
    """While running: samples the deployment's pods every 0.1 s and keeps a small closed loop of
    streamed chat requests going through the gateway (two clients)."""

    def __init__(self, cluster: Cluster, clients: int = 2) -> None:
        self.cluster = cluster
        self.most_alive = 0  # the most non-terminating pods seen at one moment
        self.crowd: list[list[str]] = []  # samples with more than replicas + 1 pods
        self.served: list[str] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, name="sample-pods")]
        self._threads += [
            threading.Thread(target=self._ask, name=f"client-{i}") for i in range(clients)
        ]

    def __enter__(self) -> Observer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            alive = [
                p.metadata.name for p in self.cluster.pods() if not p.metadata.deletion_timestamp
            ]
            self.most_alive = max(self.most_alive, len(alive))
            if len(alive) > REPLICAS + 1:
                self.crowd.append(alive)

    def _ask(self) -> None:
        while not self._stop.is_set():
            worker, problem = self.cluster.ask_streaming()
            self.served.append(worker)
            if problem:
                self.problems.append(problem)


def test_operator_killed_in_the_middle_of_a_roll(cluster: Cluster) -> None:
    before = deploy(cluster)
    md_uid = cluster.md()["metadata"]["uid"]
    old = {p.metadata.labels[TEMPLATE_HASH] for p in cluster.pods()}

    def new_pods() -> list[str]:
        return [
            p.metadata.name
            for p in cluster.pods()
            if p.metadata.labels[TEMPLATE_HASH] not in old and not p.metadata.deletion_timestamp
        ]

    with Observer(cluster) as observer:
        until(lambda: len(observer.served) >= 2, timeout=30, what="requests flowing")
        patch = {"spec": {"worker": {"env": {"ROLL": "operator-restart"}}}}
        cluster.kubectl("patch", "md", "demo", "--type=merge", "-p", json.dumps(patch))
        # first kill: the surge pod exists, no old pod has gone yet
        until(lambda: len(new_pods()) == 1, timeout=30, what="the first new pod")
        cluster.kill_operator()
        time.sleep(1.0)  # nobody reconciles for a moment
        cluster.start_operator()
        # second kill: one old pod replaced, the second new pod just created
        until(lambda: len(new_pods()) == 2, timeout=120, what="the second new pod")
        cluster.kill_operator()
        time.sleep(1.0)
        cluster.start_operator()

        def rolled() -> bool:
            pods = cluster.pods()
            return (
                len(pods) == REPLICAS
                and all(p.metadata.labels[TEMPLATE_HASH] not in old for p in pods)
                and len(cluster.ready_pods()) == REPLICAS
                and cluster.md().get("status", {}).get("phase") == "Running"
                and cluster.lease_names() == {p.metadata.name for p in pods}
            )

        until(rolled, timeout=150, what="the roll completes after the operator restarts")
        # the gateway routes to the new pods only before the load stops
        until(
            lambda: cluster.routable_workers() == set(cluster.ready_pods()),
            timeout=30,
            what="the gateway routes to the new workers",
        )

    pods = cluster.pods()
    assert not {p.metadata.name for p in pods} & before
    assert len({p.metadata.labels[TEMPLATE_HASH] for p in pods}) == 1
    assert all(p.metadata.owner_references[0].uid == md_uid for p in pods), "orphan pods"
    assert observer.crowd == [], f"more than {REPLICAS + 1} pods at once: {observer.crowd[:3]}"
    assert observer.most_alive == REPLICAS + 1, observer.most_alive  # the roll did surge
    assert observer.problems == [], observer.problems[:5]
    assert len(observer.served) >= 10, len(observer.served)
    status = cluster.md()["status"]
    assert status["observedGeneration"] == cluster.md()["metadata"]["generation"]
    assert status["readyReplicas"] == REPLICAS


def _gateway_discovery(raw: aiohttp.web.BaseRequest) -> bool:
    """The gateway's list and watch requests (only discovery selects on the bare label)."""
    return raw.method == "GET" and raw.query.get("labelSelector") == WORKER_SELECTOR


def _refused_gateway_lists(cluster: Cluster) -> int:
    api = cluster.emulator
    log = api.call(lambda: list(api.emulator.api_log))
    return sum(1 for _, path, code in log if code == 503 and "labelSelector=kubechat.dev" in path)


@pytest.fixture
def partition(cluster: Cluster) -> Iterator[list[Callable[[], None]]]:
    """Heal whatever partition a test left (the list holds heal functions)."""
    heals: list[Callable[[], None]] = []
    yield heals
    for heal in heals:
        cluster.emulator.call(heal)


def test_watch_reconnect_relists(cluster: Cluster, partition: list[Callable[[], None]]) -> None:
    survivor, victim = sorted(deploy(cluster))
    assert cluster.models() == [MODEL]

    # the gateway is cut off from the API: its watches end, its re-lists get 503
    api = cluster.emulator
    partition.append(api.call(api.emulator.partition, _gateway_discovery))
    until(lambda: _refused_gateway_lists(cluster), timeout=10, what="the gateway cut off")
    cluster.kubectl("delete", "pod", victim, "--wait=false")

    def newcomer() -> str | None:
        ready = set(cluster.ready_pods()) - {survivor, victim}
        return next(iter(ready), None) if ready <= cluster.lease_names() else None

    added = until(newcomer, timeout=120, what="the operator's replacement ready, with its lease")
    until(
        lambda: (
            {p.metadata.name for p in cluster.pods()} == {survivor, added}
            and cluster.lease_names() == {survivor, added}
        ),
        timeout=60,
        what="the deleted pod and its lease gone",
    )
    # blind for longer than a lease duration, the gateway keeps its last view (no renewal is
    # visible to it, and judging by the clock alone would stop all traffic): the survivor and the
    # deleted worker, which refuses the connection, so the gateway retries on the survivor
    time.sleep(LEASE_DURATION)
    assert cluster.routable_workers() == {survivor, victim}
    assert added not in cluster.known_workers()
    assert cluster.models() == [MODEL]
    outage = [cluster.ask_streaming() for _ in range(4)]
    assert outage == [(survivor, "")] * 4

    # reconnect: the re-list drops the deleted worker and brings the newcomer in
    cluster.emulator.call(partition.pop())
    healed = time.monotonic()
    until(
        lambda: cluster.routable_workers() == {survivor, added},
        timeout=LEASE_DURATION + 5,
        interval=0.05,
        what="the newcomer routable after the reconnect",
    )
    took = time.monotonic() - healed
    assert took <= LEASE_DURATION + 1.0, took
    assert victim not in cluster.known_workers(), "a deleted worker is still known"
    assert cluster.live_workers() == REPLICAS
    assert cluster.models() == [MODEL]
    burst = [cluster.ask_streaming() for _ in range(12)]
    assert [problem for _, problem in burst] == [""] * 12
    assert {worker for worker, _ in burst} == {survivor, added}
