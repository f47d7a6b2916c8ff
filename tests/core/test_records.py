"""Worker records: freshness, liveness and their Lease encoding."""

from __future__ import annotations

import pytest

from kubechat.discovery.records import (
    DEPLOYMENT_LABEL,
    WorkerRecord,
    format_micro_time,
    parse_micro_time,
)


def test_freshness_follows_renew_time_and_lease_duration(make_record):
    record = make_record(renew_time=1000.0, lease_duration=6.0)
    assert record.is_fresh(1005.9) and record.is_live(1005.9)
    assert not record.is_fresh(1006.1) and not record.is_live(1006.1)
    assert record.not_live_reason(1010.0).startswith("heartbeat lost (10.0 s ago")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"draining": True}, "draining"), ({"ready": False}, "not ready"), ({}, None)],
)
def test_liveness_needs_ready_and_not_draining(make_record, changes, reason):
    record = make_record(renew_time=1000.0, **changes)
    assert record.is_live(1001.0) is (reason is None)
    assert record.not_live_reason(1001.0) == reason


def test_annotations_round_trip(make_record):
    record = make_record(
        models=("a", "b"), in_flight=3, queued=2, capacity=8, draining=True, ready=False
    )
    annotations = record.to_annotations()
    assert all(isinstance(v, str) for v in annotations.values())
    assert annotations["kubechat.dev/models"] == "a,b"
    assert annotations["kubechat.dev/address"] == record.address
    again = WorkerRecord.from_annotations(
        annotations,
        name=record.name,
        deployment=record.deployment,
        renew_time=record.renew_time,
        lease_duration=record.lease_duration,
    )
    assert again == record


def test_malformed_annotations_raise_value_error(make_record):
    annotations = make_record().to_annotations()
    for key, value in [("kubechat.dev/load", "{"), ("kubechat.dev/ready", "maybe")]:
        with pytest.raises(ValueError):
            WorkerRecord.from_annotations(
                {**annotations, key: value},
                name="w",
                deployment="d",
                renew_time=0,
                lease_duration=1,
            )
    del annotations["kubechat.dev/address"]
    with pytest.raises(ValueError, match="address"):
        WorkerRecord.from_annotations(
            annotations, name="w", deployment="d", renew_time=0, lease_duration=1
        )


def test_lease_body_round_trip(make_record):
    record = make_record(renew_time=1_700_000_000.25, lease_duration=6.0)
    lease = record.to_lease(namespace="llm")
    assert lease["kind"] == "Lease" and lease["apiVersion"] == "coordination.k8s.io/v1"
    assert lease["metadata"]["namespace"] == "llm"
    assert lease["metadata"]["labels"] == {DEPLOYMENT_LABEL: "chat"}
    assert lease["spec"]["holderIdentity"] == record.name
    assert lease["spec"]["leaseDurationSeconds"] == 6
    assert lease["spec"]["renewTime"] == "2023-11-14T22:13:20.250000Z"
    assert WorkerRecord.from_lease(lease) == record


def test_fractional_lease_duration_rounds_up_in_a_lease(make_record):
    assert make_record(lease_duration=0.4).to_lease()["spec"]["leaseDurationSeconds"] == 1
    assert make_record(lease_duration=6.5).to_lease()["spec"]["leaseDurationSeconds"] == 7


def test_micro_time_round_trip():
    assert parse_micro_time(format_micro_time(1234.5)) == 1234.5
    assert parse_micro_time("1970-01-01T00:00:10Z") == 10.0
