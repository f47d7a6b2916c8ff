"""How many workers an autoscaled deployment wants: a pure function of observed state.

Inputs: the spec's bounds (``spec.autoscaling``), the previous decision's state (kept in the
resource's status by the operator, in memory by ``kubechat up``), the load the workers' leases
report now (requests in flight plus queued) and the last time a client asked for the model while
no worker served it (demand). Output: the new state, with a reason when the replica count moves.
Nothing is remembered between calls, so an operator restarted at any moment continues from the
status the last one wrote.

- The load is averaged exponentially with time constant ``windowSeconds`` (one number and its
  time to keep, however often the load is sampled): ``replicas = ceil(average / targetRequests)``
  within ``[minReplicas, maxReplicas]``.
- Demand for the model counts as a need for one worker while it is fresher than the window (the
  gateway renews it every few seconds while it holds requests).
- Up at once; down only after the load has asked for fewer workers for ``scaleDownDelaySeconds``
  without a break, so a deployment never flaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .discovery.records import WorkerRecord, format_micro_time, parse_micro_time
from .plan import DeploymentPlan, plan_deployment
from .spec import AutoscalingSpec, ModelDeployment

IDLE = 0.01  # an average below this is no load at all (an exponential average never hits 0)


@dataclass(frozen=True)
class AutoscaleState:
    """What one decision leaves for the next (times in unix seconds)."""

    desired: int
    average_load: float = 0.0
    sampled_at: float | None = None
    last_scale_time: float | None = None
    below_since: float | None = None  # since when fewer workers would do

    def to_status(self) -> dict[str, object]:
        """The state as ``status.autoscaling`` (desiredReplicas is a status field of its own)."""
        out: dict[str, object] = {"averageLoad": round(self.average_load, 3)}
        for key, value in (
            ("lastSampleTime", self.sampled_at),
            ("lastScaleTime", self.last_scale_time),
            ("belowSince", self.below_since),
        ):
            # None clears the field in a merge patch
            out[key] = format_micro_time(value) if value is not None else None
        return out

    @classmethod
    def from_status(cls, status: Mapping[str, object]) -> AutoscaleState | None:
        """The state a status holds, or None when it holds none (or a broken one)."""
        scaling = status.get("autoscaling")
        desired = status.get("desiredReplicas")
        if not isinstance(scaling, Mapping) or not isinstance(desired, int):
            return None
        try:
            return cls(
                desired=desired,
                average_load=float(scaling.get("averageLoad") or 0.0),
                sampled_at=_time(scaling.get("lastSampleTime")),
                last_scale_time=_time(scaling.get("lastScaleTime")),
                below_since=_time(scaling.get("belowSince")),
            )
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class ScaleDecision:
    """The state after one decision; ``reason`` says why ``desired`` moved (None: it did not)."""

    state: AutoscaleState
    reason: str | None = None
    previous: int = 0

    @property
    def scaled(self) -> str | None:
        """``ScaledUp`` or ``ScaledDown`` (an Event reason) when desired moved, else None."""
        if self.reason is None:
            return None
        return "ScaledUp" if self.state.desired > self.previous else "ScaledDown"


def observed_load(leases: Iterable[WorkerRecord], now: float) -> int:
    """Requests in flight plus queued over the workers whose lease is fresh (a draining worker
    included: what it still serves is load until it is done)."""
    return sum(r.in_flight + r.queued for r in leases if r.is_fresh(now))


def decide_replicas(
    spec: AutoscalingSpec,
    previous: AutoscaleState | None,
    load: float,
    now: float,
    *,
    demand: float | None = None,
    current: int = 0,
) -> ScaleDecision:
    """The next state from ``previous`` (None on the first decision: start from ``current``
    workers within the bounds), the ``load`` seen at ``now`` and the last ``demand`` time."""
    lo, hi = spec.min_replicas, spec.max_replicas
    state = previous or AutoscaleState(desired=_clamp(current, lo, hi))
    average = _average(state, load, now, spec.window_seconds)
    state = replace(state, average_load=average, sampled_at=now)
    want = _clamp(math.ceil(average / spec.target_requests) if average >= IDLE else 0, lo, hi)
    wanted = demand is not None and now - demand <= spec.window_seconds
    if wanted:
        want = max(want, min(1, hi))
    before = state.desired
    if before < lo or before > hi:
        return _moved(
            state, _clamp(before, lo, hi), now, before, f"within minReplicas {lo}, maxReplicas {hi}"
        )
    if want > before:
        why = (
            "a request is waiting for the model"
            if wanted and before == 0 and average < IDLE
            else _load_text(average, spec)
        )
        return _moved(state, want, now, before, why)
    if want == before:
        return ScaleDecision(replace(state, below_since=None), previous=before)
    since = state.below_since if state.below_since is not None else now
    if now - since < spec.scale_down_delay_seconds:
        return ScaleDecision(replace(state, below_since=since), previous=before)
    return _moved(
        state,
        want,
        now,
        before,
        f"{_load_text(average, spec)} for {spec.scale_down_delay_seconds} s",
    )


def scalable_plan(md: ModelDeployment) -> DeploymentPlan:
    """The deployment's plan, for an autoscaled one with a worker for every replica the
    autoscaler may ask for (``maxReplicas``; ``spec.replicas`` does not count then)."""
    if md.spec.autoscaling is None:
        return plan_deployment(md)
    spec = md.spec.model_copy(update={"replicas": md.spec.autoscaling.max_replicas})
    return plan_deployment(md.model_copy(update={"spec": spec}))


def _moved(state: AutoscaleState, desired: int, now: float, before: int, why: str) -> ScaleDecision:
    new = replace(state, desired=desired, last_scale_time=now, below_since=None)
    return ScaleDecision(new, f"{before} -> {desired} workers: {why}", previous=before)


def _load_text(average: float, spec: AutoscalingSpec) -> str:
    return (
        f"average load {average:.2f} requests over {spec.window_seconds} s, "
        f"target {spec.target_requests} per worker"
    )


def _average(state: AutoscaleState, load: float, now: float, window: float) -> float:
    """The exponential average of the load with time constant ``window``, moved to ``now``."""
    if state.sampled_at is None:
        return float(load)
    weight = 1.0 - math.exp(-max(0.0, now - state.sampled_at) / window)
    average = state.average_load + weight * (load - state.average_load)
    return average if average >= IDLE / 10 else 0.0


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def _time(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return parse_micro_time(value)
    raise TypeError(f"not a time: {value!r}")
