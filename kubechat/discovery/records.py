"""Worker lease records and the two protocols around them (who writes leases, who reads them).

A record is what a worker's heartbeat says about it. In Kubernetes it is a
``coordination.k8s.io/v1`` Lease named after the pod (spec: holderIdentity, renewTime,
leaseDurationSeconds; the deployment as the ``kubechat.dev/deployment`` label; the rest as
annotations). The local store keeps the same annotations in JSON files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from kubechat.defaults import LEASE_DURATION

DEPLOYMENT_LABEL = "kubechat.dev/deployment"
MODELS_ANNOTATION = "kubechat.dev/models"
ADDRESS_ANNOTATION = "kubechat.dev/address"
READY_ANNOTATION = "kubechat.dev/ready"
DRAINING_ANNOTATION = "kubechat.dev/draining"
LOAD_ANNOTATION = "kubechat.dev/load"


@dataclass(frozen=True)
class WorkerRecord:
    """One worker as its latest heartbeat describes it."""

    name: str
    deployment: str
    models: tuple[str, ...]
    address: str  # base URL, e.g. http://127.0.0.1:8001
    ready: bool
    draining: bool
    in_flight: int
    queued: int
    capacity: int
    renew_time: float  # unix seconds
    lease_duration: float = LEASE_DURATION

    def age(self, now: float) -> float:
        """Seconds since the last renewal (never negative)."""
        return max(0.0, now - self.renew_time)

    def is_fresh(self, now: float) -> bool:
        """Whether the lease has not expired at ``now``."""
        return now <= self.renew_time + self.lease_duration

    def is_live(self, now: float) -> bool:
        """Whether the worker may receive traffic: ready, fresh and not draining."""
        return self.ready and self.is_fresh(now) and not self.draining

    def not_live_reason(self, now: float) -> str | None:
        """Why the worker gets no traffic (None when it is live)."""
        if not self.is_fresh(now):
            return f"heartbeat lost ({self.age(now):.1f} s ago, lease {self.lease_duration:g} s)"
        if self.draining:
            return "draining"
        if not self.ready:
            return "not ready"
        return None

    def to_annotations(self) -> dict[str, str]:
        """The record's payload as Lease annotations (string values only)."""
        load = {"inFlight": self.in_flight, "queued": self.queued, "capacity": self.capacity}
        return {
            MODELS_ANNOTATION: ",".join(self.models),
            ADDRESS_ANNOTATION: self.address,
            READY_ANNOTATION: _bool_text(self.ready),
            DRAINING_ANNOTATION: _bool_text(self.draining),
            LOAD_ANNOTATION: json.dumps(load, separators=(",", ":")),
        }

    @classmethod
    def from_annotations(
        cls,
        annotations: Mapping[str, str],
        *,
        name: str,
        deployment: str,
        renew_time: float,
        lease_duration: float,
    ) -> WorkerRecord:
        """Rebuild a record from Lease annotations; raises ValueError if they are malformed."""
        try:
            load = json.loads(annotations.get(LOAD_ANNOTATION) or "{}")
            if not isinstance(load, dict):
                raise ValueError(f"{LOAD_ANNOTATION} is not a JSON object")
            address = annotations[ADDRESS_ANNOTATION]
            models = tuple(m for m in annotations.get(MODELS_ANNOTATION, "").split(",") if m)
            return cls(
                name=name,
                deployment=deployment,
                models=models,
                address=address,
                ready=_parse_bool(annotations.get(READY_ANNOTATION, "false")),
                draining=_parse_bool(annotations.get(DRAINING_ANNOTATION, "false")),
                in_flight=int(load.get("inFlight", 0)),
                queued=int(load.get("queued", 0)),
                capacity=int(load.get("capacity", 0)),
                renew_time=float(renew_time),
                lease_duration=float(lease_duration),
            )
        except KeyError as exc:
            raise ValueError(f"lease {name}: annotation {exc.args[0]} missing") from None
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"lease {name}: {exc}") from None

    def to_lease(self, namespace: str | None = None) -> dict[str, Any]:
        """The record as a ``coordination.k8s.io/v1`` Lease body (owner references not included)."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "labels": {DEPLOYMENT_LABEL: self.deployment},
            "annotations": self.to_annotations(),
        }
        if namespace:
            metadata["namespace"] = namespace
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.name,
                "renewTime": format_micro_time(self.renew_time),
                # An integer in the Lease API: round up so a lease never expires early.
                "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            },
        }

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> WorkerRecord:
        """Rebuild a record from a Lease body (a dict as the API returns it)."""
        metadata = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        name = metadata.get("name") or spec.get("holderIdentity") or "?"
        renew = spec.get("renewTime")
        if not renew:
            raise ValueError(f"lease {name}: no spec.renewTime")
        return cls.from_annotations(
            metadata.get("annotations") or {},
            name=name,
            deployment=(metadata.get("labels") or {}).get(DEPLOYMENT_LABEL, ""),
            renew_time=parse_micro_time(renew) if isinstance(renew, str) else renew.timestamp(),
            lease_duration=float(spec.get("leaseDurationSeconds") or LEASE_DURATION),
        )


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _parse_bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"not a boolean: {text!r}")


def format_micro_time(ts: float) -> str:
    """Unix seconds as a Kubernetes MicroTime string (``2024-05-01T12:00:00.123456Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> float:
    """A Kubernetes MicroTime or Time string as unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@runtime_checkable
class LeaseWriter(Protocol):
    """What a worker's heartbeat writes to: the local store or the Kubernetes Lease store.

    ``publish`` and ``remove`` may be plain or ``async`` methods; plain ones are called off the
    event loop so a slow API server never stalls the worker.
    """

    def publish(self, record: WorkerRecord) -> Any:
        """Create or replace the record named ``record.name``."""
        ...

    def remove(self, name: str) -> Any:
        """Delete the record ``name`` (no error if it is already gone)."""
        ...


@runtime_checkable
class WorkerSource(Protocol):
    """What the gateway and the UI read workers from.

    ``snapshot`` returns the current records (live or not). Sources that watch something in the
    background also have ``async start()`` and ``async stop()``; ``LiveView`` calls them if present.
    """

    def snapshot(self) -> list[WorkerRecord]:
        """All known records, including stale, draining and not-ready ones."""
        ...
