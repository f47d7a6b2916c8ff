"""End to end on the Kubernetes API emulator with the pod runner: an autoscaled ModelDeployment
(minReplicas 0; seconds instead of minutes) starts with no pod, the openai SDK's request through
the gateway waits while a pod is created and becomes Ready and gets K2, a burst of streams raises
the pods to maxReplicas, idle brings them back to zero, and no request fails on the way;
``kubectl scale`` is ignored with an Event."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
import yaml

from tests.support.burst import sustained_burst
from tests.support.kube_stack import EXAMPLE, MODEL, SEED, Cluster
from tests.support.processes import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAST = {
    "minReplicas": 0,
    "maxReplicas": 2,
    "targetRequests": 1,
    "windowSeconds": 2,
    "scaleDownDelaySeconds": 3,
}


def autoscaled_manifest() -> str:
    """examples/demo-cluster.yaml with spec.autoscaling instead of replicas."""
    body = yaml.safe_load(EXAMPLE.read_text())
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = FAST
    return json.dumps(body)


def stream(cluster: Cluster) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": SEED}],
        "max_tokens": 120,
        "ignore_eos": True,
        "stream": True,
    }
    url = f"{cluster.gateway}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=600) as r:
        return r.status_code, r.read().decode()


def events(cluster: Cluster) -> list[tuple[str, str]]:
    """(reason, message) of the Events about the demo ModelDeployment."""
    items = cluster.core.list_namespaced_event("default").items
    return [(e.reason, e.message) for e in items if e.involved_object.name == "demo"]


def test_zero_to_max_and_back_without_a_failed_request(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=autoscaled_manifest())
    until(lambda: cluster.md().get("status", {}).get("desiredReplicas") == 0, what="decided 0")
    time.sleep(4)  # another pass or two: still nothing
    assert cluster.pods() == [], "minReplicas 0 starts with no pod"
    header, row = (line.split() for line in cluster.kubectl("get", "md").splitlines()[:2])
    assert row[header.index("DESIRED")] == "0"

    client = openai.OpenAI(
        base_url=f"{cluster.gateway}/v1", api_key="none", max_retries=0, timeout=600
    )
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SEED}], temperature=0
    )
    assert "K2" in reply.choices[0].message.content
    assert len(cluster.ready_pods()) >= 1
    metadata = cluster.md()["metadata"]
    assert "kubechat.dev/demand" in metadata.get("annotations", {}), "the gateway's demand"

    # the burst lasts until the second pod is Ready (bounded at 180 s)
    answers, most = sustained_burst(
        lambda: stream(cluster), lambda: len(cluster.ready_pods()), target=2
    )
    assert [code for code, _ in answers] == [200] * len(answers)
    for _, text in answers:
        assert '"error"' not in text and text.rstrip().endswith("data: [DONE]")
    assert most == 2, "the burst raised the ready pods to maxReplicas"

    until(lambda: cluster.pods() == [], timeout=180, what="idle: back to zero pods")
    until(lambda: not cluster.lease_names(), timeout=30, what="no lease left")
    assert cluster.md()["status"]["desiredReplicas"] == 0

    # kubectl scale on an autoscaled deployment: ignored, and an Event says so
    cluster.kubectl("scale", "md/demo", "--replicas=3")
    until(
        lambda: any(reason == "ReplicasIgnored" for reason, _ in events(cluster)),
        timeout=30,
        what="a ReplicasIgnored Event",
    )
    time.sleep(4)
    assert cluster.pods() == [] and cluster.md()["status"]["desiredReplicas"] == 0
    reasons = [reason for reason, _ in events(cluster)]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons
    cluster.kubectl("delete", "md", "demo")
    until(lambda: cluster.md_gone(), timeout=60, what="deleted")
