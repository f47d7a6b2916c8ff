"""End to end on the Kubernetes API emulator: real kubectl, the real operator (``kubechat
operator``), the test kubelet running real workers on the demo model, and the gateway finding
them through Pods and Leases.

apply -> K2 through the gateway -> scale to 2, both serve -> spec change rolls with ready
workers never below 2 and no failed request -> kill -9 of a worker leaves routing within the
lease duration and the pod comes back -> invalid spec shows InvalidSpec -> delete leaves nothing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.support.kube_stack import EXAMPLE, LABEL, LEASE_DURATION, SEED, Cluster
from tests.support.kube_tools import run_kubectl
from tests.support.processes import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_lifecycle(cluster: Cluster) -> None:
    # apply: one worker pod, Ready, with a lease; the gateway answers through it
    cluster.kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
    until(lambda: cluster.md().get("status", {}).get("readyReplicas") == 1, what="1 ready")
    client = openai.OpenAI(base_url=f"{cluster.gateway}/v1", api_key="none")
    until(lambda: cluster.ask().status_code == 200, timeout=30, what="gateway sees the worker")
    reply = client.chat.completions.create(
        model="kubechat-demo", messages=[{"role": "user", "content": SEED}], temperature=0
    )
    assert "K2" in reply.choices[0].message.content

    md = cluster.md()
    assert md["status"]["phase"] == "Running"
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    pod = cluster.pods()[0]
    assert pod.metadata.owner_references[0].uid == md["metadata"]["uid"]
    assert pod.metadata.labels["team"] == "platform"
    lease = cluster.leases.read_namespaced_lease(pod.metadata.name, "default")
    assert lease.metadata.owner_references[0].uid == pod.metadata.uid
    assert lease.metadata.annotations["kubechat.dev/models"] == "kubechat-demo"

    table = cluster.kubectl("get", "md")
    header = table.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "GPUS", "REPLICAS", "DESIRED", "READY", "PHASE", "AGE"]
    row = table.splitlines()[1].split()[:7]
    assert row == ["demo", "kubechat:demo", "0", "1", "1", "1", "Running"]

    # scale to 2: both workers take requests
    cluster.kubectl("scale", "md/demo", "--replicas=2")
    until(lambda: cluster.md().get("status", {}).get("readyReplicas") == 2, what="2 ready")
    until(
        lambda: cluster.live_workers() == 2, timeout=30, what="the gateway routes to both workers"
    )
    served = {cluster.ask(max_tokens=4).headers["x-kubechat-worker"] for _ in range(12)}
    assert served == set(cluster.ready_pods())

    # spec change: rolling update, never fewer than 2 ready workers, no request fails
    before = set(cluster.ready_pods())
    samples: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def watch_readiness() -> None:
        while not stop.is_set():
            samples.append(len(cluster.ready_pods()))
            time.sleep(0.1)

    def keep_asking() -> None:
        while not stop.is_set():
            r = cluster.ask(max_tokens=4)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=watch_readiness), threading.Thread(target=keep_asking)]
    for t in threads:
        t.start()
    try:
        cluster.kubectl(
            "patch", "md", "demo", "--type=merge", "-p", '{"spec":{"worker":{"env":{"ROLL":"1"}}}}'
        )

        def rolled() -> bool:
            names = set(cluster.ready_pods())
            status = cluster.md().get("status", {})
            return (
                len(names) == 2
                and not names & before
                and len(cluster.pods()) == 2
                and status.get("phase") == "Running"
            )

        until(rolled, timeout=240, what="rolled to new pods")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert min(samples) >= 2, f"ready workers dropped during the roll: {samples}"
    assert failures == []
    events = cluster.core.list_namespaced_event("default").items
    reasons = {e.reason for e in events if e.involved_object.name == "demo"}
    assert {"CreatedPod", "DeletingPod"} <= reasons, reasons

    # kill -9 of one worker: it leaves routing within the lease duration; the pod comes back
    until(lambda: cluster.live_workers() == 2, timeout=30, what="both new workers routable")
    victim, pid = sorted(cluster.runner.processes().items())[0]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    until(lambda: cluster.live_workers() == 1, timeout=30, interval=0.05, what="dead one gone")
    left_routing = time.monotonic() - killed
    assert left_routing <= LEASE_DURATION + 1.0, left_routing
    results = [cluster.ask(max_tokens=4) for _ in range(6)]
    assert [r.status_code for r in results] == [200] * 6
    assert victim not in {r.headers["x-kubechat-worker"] for r in results}
    until(lambda: cluster.md().get("status", {}).get("readyReplicas") == 2, what="back to 2")

    # a spec the schema accepts but kubechat cannot serve: InvalidSpec, pods untouched
    pods_before = set(cluster.ready_pods())
    cluster.kubectl(
        "patch",
        "md",
        "demo",
        "--type=merge",
        "-p",
        '{"spec":{"resources":{"maxGpuMemory":"20GiB"}}}',
    )

    def invalid() -> dict | None:
        conditions = cluster.md().get("status", {}).get("conditions") or []
        return next(
            (c for c in conditions if c["type"] == "InvalidSpec" and c["status"] == "True"), None
        )

    condition = until(invalid, timeout=30, what="InvalidSpec condition")
    assert "spec.resources.maxGpuMemory" in condition["message"]
    assert cluster.md()["status"]["phase"] == "Failed"
    assert set(cluster.ready_pods()) == pods_before

    # delete: no pod and no lease left
    cluster.kubectl("delete", "md", "demo", "--wait=false")
    until(lambda: not cluster.pods(), timeout=60, what="pods gone")
    until(
        lambda: not cluster.leases.list_namespaced_lease("default", label_selector=LABEL).items,
        timeout=30,
        what="leases gone",
    )
    until(cluster.md_gone, timeout=30, what="the ModelDeployment is gone")


def test_schema_rejects_invalid_resources(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps(
            {
                "apiVersion": "kubechat.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "bad"},
                "spec": {"model": {"path": "x", "dtype": "float8"}, "replicas": -1},
            }
        )
    )
    result = run_kubectl(
        cluster.emulator.kubeconfig, "apply", "--validate=false", "-f", str(bad), check=False
    )
    assert result.returncode != 0
    assert "replicas" in result.stderr or "dtype" in result.stderr, result.stderr
