"""Autoscaling passes against the API emulator: demand written by the gateway's writer starts a
worker at zero, lease load scales up, spec.replicas (kubectl scale) is ignored with an Event,
idle goes back to zero after the delay; every pass by a freshly started operator."""

from __future__ import annotations

import asyncio
import time

import kubernetes

from kubechat.discovery.demand import KubernetesDemand
from tests.operator.test_controller import Events, create_md, pods, read_md, reconcile, serve

SCALING = {
    "minReplicas": 0,
    "maxReplicas": 2,
    "targetRequests": 1,
    "scaleDownDelaySeconds": 2,
    "windowSeconds": 1,
}


def test_zero_demand_burst_ignored_scale_and_back_to_zero(api) -> None:
    create_md(api, "auto", 1, autoscaling=SCALING)
    events = Events()
    status = reconcile(api, "auto", events)
    assert pods(api, "auto") == {}, "minReplicas 0 starts with no pod"
    assert (status["desiredReplicas"], status["phase"]) == (0, "ScaledDown")

    # the gateway's writer: the annotation on the ModelDeployment
    demand = KubernetesDemand(api, ["default"])
    demand.refresh()
    wanted = demand.deployment_for("kubechat-demo")
    assert wanted is not None and (wanted.namespace, wanted.name) == ("default", "auto")
    asyncio.run(demand.want(wanted))
    status = reconcile(api, "auto", events)
    assert status["desiredReplicas"] == 1
    (pod,) = pods(api, "auto")
    assert ("Normal", "ScaledUp", "0 -> 1 workers: a request is waiting for the model") in events

    time.sleep(1.0)
    serve(api, pod, "auto", in_flight=4)
    status = reconcile(api, "auto", events)
    assert status["desiredReplicas"] == 2 and len(pods(api, "auto")) == 2
    assert events.reasons().count("ScaledUp") == 2

    # kubectl scale writes spec.replicas through the scale subresource: ignored, with an Event
    kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object_scale(
        "kubechat.dev", "v1alpha1", "default", "modeldeployments", "auto", {"spec": {"replicas": 5}}
    )
    status = reconcile(api, "auto", events)
    assert status["desiredReplicas"] == 2 and len(pods(api, "auto")) == 2
    assert "ReplicasIgnored" in events.reasons()
    assert reconcile(api, "auto", events) and events.reasons().count("ReplicasIgnored") == 1

    for name in pods(api, "auto"):
        serve(api, name, "auto", in_flight=0)
    deadline = time.monotonic() + 30
    while pods(api, "auto") and time.monotonic() < deadline:
        status = reconcile(api, "auto", events)
        for name in pods(api, "auto"):  # workers keep renewing while they run
            serve(api, name, "auto", in_flight=0)
        time.sleep(0.5)
    assert pods(api, "auto") == {} and status["desiredReplicas"] == 0
    downs = [m for _, r, m in events if r == "ScaledDown"]
    assert downs[-1].endswith(
        " -> 0 workers: average load 0.00 requests over 1 s, target 1 per worker for 2 s"
    ), downs
    written = read_md(api, "auto")["status"]
    assert written["desiredReplicas"] == 0 and "lastScaleTime" in written["autoscaling"]
