"""spec.autoscaling and the autoscaler's decision: replicas from the leases' load over a window,
up at once, down only after the delay, one worker on demand at zero, state kept in status."""

from __future__ import annotations

import pytest

from kubechat.autoscale import AutoscaleState, decide_replicas, observed_load
from kubechat.discovery.records import WorkerRecord
from kubechat.spec import AutoscalingSpec, SpecError, parse_model_deployment


def scaling(**fields) -> AutoscalingSpec:
    values = {"minReplicas": 0, "maxReplicas": 3, "targetRequests": 2}
    values.update(fields)
    return AutoscalingSpec.model_validate(values)


def md(autoscaling: dict) -> dict:
    return {
        "apiVersion": "kubechat.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": {"model": {"path": "kubechat:demo"}, "autoscaling": autoscaling},
    }


def test_spec_defaults_and_bounds():
    spec = parse_model_deployment(md({"maxReplicas": 4})).spec.autoscaling
    assert (spec.min_replicas, spec.max_replicas, spec.target_requests) == (1, 4, 16)
    assert (spec.scale_down_delay_seconds, spec.window_seconds) == (300, 60)
    with pytest.raises(SpecError) as err:
        parse_model_deployment(md({"minReplicas": 3, "maxReplicas": 2}))
    assert err.value.errors == [
        ("spec.autoscaling.maxReplicas", "must be at least minReplicas (3), got 2")
    ]
    with pytest.raises(SpecError) as err:
        parse_model_deployment(md({"minReplicas": 0}))
    assert err.value.errors == [("spec.autoscaling.maxReplicas", "required")]
    with pytest.raises(SpecError) as err:
        parse_model_deployment(md({"maxReplicas": 2, "targetRequests": 0}))
    assert err.value.errors == [("spec.autoscaling.targetRequests", "must be >= 1 (got 0)")]


def test_min_zero_starts_with_no_worker():
    d = decide_replicas(scaling(), None, load=0, now=100.0)
    assert d.state.desired == 0 and d.reason is None


def test_first_decision_keeps_running_workers_within_bounds():
    assert decide_replicas(scaling(), None, load=0, now=1.0, current=2).state.desired == 2
    assert decide_replicas(scaling(), None, load=0, now=1.0, current=9).state.desired == 3


def test_demand_at_zero_asks_for_one_worker():
    idle = AutoscaleState(desired=0, average_load=0.0, sampled_at=100.0)
    d = decide_replicas(scaling(windowSeconds=10), idle, load=0, now=101.0, demand=100.5)
    assert d.state.desired == 1
    assert d.scaled == "ScaledUp"
    assert d.reason == "0 -> 1 workers: a request is waiting for the model"
    # demand older than the window is no demand
    stale = decide_replicas(scaling(windowSeconds=10), idle, load=0, now=200.0, demand=100.5)
    assert stale.state.desired == 0


def test_burst_scales_up_at_once_to_max():
    one = AutoscaleState(desired=1, average_load=0.0, sampled_at=100.0)
    d = decide_replicas(scaling(windowSeconds=2), one, load=12, now=102.0)
    # average 12 * (1 - e^-1) = 7.6 requests, target 2: 4 workers, capped at 3
    assert d.state.desired == 3
    assert d.reason.startswith("1 -> 3 workers: average load 7.59 requests over 2 s")


def test_short_spike_counts_less_than_lasting_load():
    one = AutoscaleState(desired=1, average_load=0.0, sampled_at=100.0)
    d = decide_replicas(scaling(windowSeconds=60), one, load=6, now=101.0)
    assert d.state.desired == 1  # 6 * (1 - e^(-1/60)) = 0.1 request on average
    assert d.state.average_load == pytest.approx(6 * 0.01653, rel=1e-3)


def test_scale_down_waits_for_the_delay_without_a_break():
    spec = scaling(scaleDownDelaySeconds=30, windowSeconds=1)
    state = AutoscaleState(desired=3, average_load=6.0, sampled_at=0.0)
    d = decide_replicas(spec, state, load=0, now=10.0)
    assert d.state.desired == 3 and d.state.below_since == 10.0  # fewer would do from now
    d = decide_replicas(spec, d.state, load=0, now=39.0)
    assert d.state.desired == 3  # 29 s: not yet
    # load comes back for a moment: the wait starts over
    d = decide_replicas(spec, d.state, load=12, now=39.5)
    assert d.state.desired == 3 and d.state.below_since is None
    d = decide_replicas(spec, d.state, load=0, now=50.0)
    d = decide_replicas(spec, d.state, load=0, now=79.0)
    assert d.state.desired == 3
    d = decide_replicas(spec, d.state, load=0, now=80.0)
    assert d.state.desired == 0
    assert d.scaled == "ScaledDown"
    assert d.reason.endswith("for 30 s")
    assert d.state.last_scale_time == 80.0


def test_bounds_change_applies_at_once():
    d = decide_replicas(scaling(maxReplicas=2), AutoscaleState(desired=3), load=0, now=1.0)
    assert d.state.desired == 2
    assert d.reason == "3 -> 2 workers: within minReplicas 0, maxReplicas 2"


def test_state_round_trips_through_status():
    state = AutoscaleState(
        desired=2, average_load=1.25, sampled_at=1700000000.5, last_scale_time=1700000000.25
    )
    status = {"desiredReplicas": 2, "autoscaling": state.to_status()}
    assert status["autoscaling"]["belowSince"] is None  # clears the field in a merge patch
    back = AutoscaleState.from_status(status)
    assert back == state
    assert AutoscaleState.from_status({}) is None
    assert AutoscaleState.from_status({"desiredReplicas": 1, "autoscaling": {"belowSince": 5}}) is (
        None
    )


def test_observed_load_counts_fresh_leases_only():
    def lease(name: str, in_flight: int, queued: int, renewed: float) -> WorkerRecord:
        return WorkerRecord(
            name, "m", ("m",), "http://x", True, False, in_flight, queued, 4, renewed, 6.0
        )

    leases = [lease("a", 2, 1, 99.0), lease("b", 1, 0, 99.0), lease("c", 5, 5, 50.0)]
    assert observed_load(leases, now=100.0) == 4
