"""The ModelDeployment's ``status`` as the operator writes it (operator/status.py builds it).

Only the CRD's status schema is generated from these models (``python -m kubechat.crd``); nothing
parses a status with them. A new status field is a field here, then the generator run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_INT64 = {"format": "int64"}
_TIMESTAMP = {"format": "date-time"}


class _Status(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class WorkerLoad(_Status):
    """``status.workers[].load``."""

    in_flight: int | None = Field(None, alias="inFlight", description="Requests being generated.")
    queued: int | None = Field(None, description="Requests waiting for a slot.")
    capacity: int | None = Field(
        None, description="Requests the worker serves at once (limitConcurrency)."
    )


class WorkerStatus(_Status):
    """One entry of ``status.workers``."""

    pod: str | None = Field(None, description="Name of the worker pod.")
    address: str | None = Field(None, description="Base URL the worker serves on.")
    ready: bool | None = Field(None, description="Whether the worker receives traffic.")
    last_heartbeat: str | None = Field(
        None,
        alias="lastHeartbeat",
        description="Renew time of the worker's Lease; absent until the worker has written its "
        "Lease.",
        json_schema_extra=_TIMESTAMP,
    )
    heartbeat_age_seconds: float | None = Field(
        None,
        alias="heartbeatAgeSeconds",
        description="Seconds between the last heartbeat and this status update; -1 while the "
        "worker has no Lease.",
    )
    load: WorkerLoad | None = Field(None, description="Load reported with the last heartbeat.")


class Condition(_Status):
    """One entry of ``status.conditions``."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="A CamelCase reason, e.g. ModelLoadFailed.")
    message: str | None = Field(None, description="Human-readable detail.")
    last_transition_time: str | None = Field(
        None,
        alias="lastTransitionTime",
        description="When the status last changed.",
        json_schema_extra=_TIMESTAMP,
    )
    observed_generation: int | None = Field(
        None,
        alias="observedGeneration",
        description="The metadata.generation the condition was set for.",
        json_schema_extra=_INT64,
    )


class AutoscalingStatus(_Status):
    """``status.autoscaling``: what the autoscaler's next decision starts from (so a restarted
    operator continues where the last one stopped)."""

    average_load: float | None = Field(
        None,
        alias="averageLoad",
        description="Requests in flight plus queued over all workers, averaged over the "
        "spec's windowSeconds.",
    )
    last_sample_time: str | None = Field(
        None,
        alias="lastSampleTime",
        description="When averageLoad was computed.",
        json_schema_extra=_TIMESTAMP,
    )
    last_scale_time: str | None = Field(
        None,
        alias="lastScaleTime",
        description="When desiredReplicas last changed.",
        json_schema_extra=_TIMESTAMP,
    )
    below_since: str | None = Field(
        None,
        alias="belowSince",
        description="Since when the load has asked for fewer workers than desiredReplicas "
        "(a scale-down waits scaleDownDelaySeconds from here); absent when it has not.",
        json_schema_extra=_TIMESTAMP,
    )
    spec_replicas: int | None = Field(
        None,
        alias="specReplicas",
        description="spec.replicas as last seen: a change (kubectl scale) is reported with a "
        "ReplicasIgnored Event.",
    )


WorkerItem = Annotated[
    WorkerStatus, Field(description="One worker as its pod and heartbeat Lease report it.")
]
ConditionItem = Annotated[Condition, Field(description="One aspect of the deployment's state.")]


class ModelDeploymentStatus(_Status):
    """``status``."""

    model_config = ConfigDict(
        json_schema_extra={"description": "The observed state, written by the kubechat operator."}
    )

    phase: str | None = Field(
        None,
        description="Pending (no ready worker yet), Running (all replicas ready), Progressing "
        "(scaling or rolling to a new spec, some ready), Degraded (some ready), Failed (invalid "
        "spec or model load failure) or ScaledDown (0 replicas).",
    )
    replicas: int | None = Field(
        None, description="Workers that exist (the scale subresource's status replicas)."
    )
    ready_replicas: int | None = Field(
        None,
        alias="readyReplicas",
        description="Workers whose pod is Ready and whose heartbeat Lease is fresh.",
    )
    desired_replicas: int | None = Field(
        None,
        alias="desiredReplicas",
        description="Workers the operator aims at: spec.replicas, or the autoscaler's decision "
        "while spec.autoscaling is set.",
    )
    autoscaling: AutoscalingStatus | None = Field(
        None, description="The autoscaler's state; absent without spec.autoscaling."
    )
    selector: str | None = Field(
        None, description="Label selector of the worker pods, for the scale subresource."
    )
    observed_generation: int | None = Field(
        None,
        alias="observedGeneration",
        description="The metadata.generation this status describes.",
        json_schema_extra=_INT64,
    )
    workers: list[WorkerItem] | None = Field(
        None, description="Each worker's pod, address, readiness, heartbeat and load."
    )
    conditions: list[ConditionItem] | None = Field(
        None,
        description="Conditions such as Ready and Progressing, with reasons like InvalidSpec, "
        "InsufficientGpuMemory, ModelLoadFailed and HeartbeatLost.",
        # one condition per type: server-side apply merges the list by type
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
