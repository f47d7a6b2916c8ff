"""The status the operator writes, as build_status makes it: valid against the CRD's status
schema with formats checked (what the API server refuses takes the whole status patch with it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from kubechat.discovery.records import WorkerRecord
from kubechat.operator.reconcile import Decision, ObservedPod
from kubechat.operator.status import build_status
from tests.support.kube_schema import format_checker, validation_errors

CRD = Path(__file__).resolve().parents[2] / "crds" / "modeldeployment.yaml"
HASH = "abc123"


@pytest.fixture(scope="module")
def status_schema() -> dict:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


def pod(name: str, *, ready: bool = True, **fields) -> ObservedPod:
    return ObservedPod(
        name=name,
        template_hash=HASH,
        ready=ready,
        phase="Running",
        created=time.time() - 10,
        **fields,
    )


def lease(name: str, age: float = 1.0) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        deployment="demo",
        models=("demo",),
        address="http://10.0.0.9:8000",
        ready=True,
        draining=False,
        in_flight=1,
        queued=0,
        capacity=4,
        renew_time=time.time() - age,
        lease_duration=6.0,
    )


def status_of(pods: list[ObservedPod], leases: dict[str, WorkerRecord], **kw) -> dict:
    return build_status(
        "demo", len(pods), HASH, pods, leases, Decision(), 3, kw.get("previous", {}), time.time()
    )


def test_the_format_check_is_not_vacuous(status_schema) -> None:
    assert "date-time" in format_checker().checkers
    broken = {"workers": [{"pod": "p", "lastHeartbeat": ""}]}
    assert validation_errors(broken, status_schema) != []
    assert validation_errors({"workers": [{"lastHeartbeat": "yesterday"}]}, status_schema) != []


def test_status_with_and_without_a_lease_validates_with_formats(status_schema) -> None:
    status = status_of(
        [pod("with-lease"), pod("no-lease-yet", ready=False)], {"with-lease": lease("with-lease")}
    )
    assert validation_errors(status, status_schema) == []
    lines = {w["pod"]: w for w in status["workers"]}
    assert lines["with-lease"]["lastHeartbeat"].endswith("Z")
    assert "lastHeartbeat" not in lines["no-lease-yet"]
    assert lines["no-lease-yet"]["heartbeatAgeSeconds"] == -1


def test_status_of_pods_that_never_wrote_a_lease_validates(status_schema) -> None:
    status = status_of([pod("a", ready=False), pod("b", ready=False)], {})
    assert validation_errors(status, status_schema) == []
    again = status_of([pod("a", ready=False)], {}, previous=status)
    assert validation_errors(again, status_schema) == []
