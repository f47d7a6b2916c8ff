"""Faults under load, end to end on real processes: two demo workers behind the gateway.

The scenario drivers live in benchmarks/fault_scenarios.py (benchmarks/faults.py prints the same
figures). Leases renew every 0.5 s and expire after 2 s; the gateway runs with its default
timeouts, and ends the requests of a worker whose lease expired. Every request a client sends must
end with a completion or a clear error: none lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import fault_scenarios as fs

pytestmark = pytest.mark.slow

MID_STREAM_FAILURE = "error event: upstream_failed"


@pytest.fixture(scope="module")
def stack(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[fs.LocalStack]:
    s = fs.LocalStack(fs.StackConfig(demo_model_dir, tmp_path_factory.mktemp("faults")))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def full_stack(stack: fs.LocalStack) -> fs.LocalStack:
    """The stack with every worker running and routable (a previous test may have killed one)."""
    stack.ensure_workers()
    return stack


def test_kill_9_ends_its_streams_with_an_error_and_loses_nothing(full_stack) -> None:
    report = asyncio.run(fs.kill_9(full_stack))
    print(report.line())
    assert report.lost == 0
    assert report.completed + report.failed == report.sent
    # the streams on the killed worker end with an error event; a request may also find the
    # survivor full for a moment (429 with Retry-After): a clear answer too
    errors = report.errors()
    assert 1 <= errors.get(MID_STREAM_FAILURE, 0) <= fs.CLIENTS, errors
    assert set(errors) <= {MID_STREAM_FAILURE, "HTTP 429"}, errors
    # requests sent to it before its lease expired were retried on the survivor
    assert report.retried >= 1
    assert report.left_routing is not None
    assert report.left_routing <= full_stack.config.lease_duration + 1.0
    assert report.completed > fs.CLIENTS


def test_sigterm_drains_the_worker_without_failing_a_request(full_stack) -> None:
    report = asyncio.run(fs.sigterm(full_stack))
    print(report.line())
    assert report.lost == 0
    assert report.failed == 0, report.errors()
    # the lease says draining at once (long before it would expire), the gateway stops routing
    assert report.notes["lease_draining_after"] is not None
    assert report.notes["lease_draining_after"] < full_stack.config.lease_duration
    assert report.left_routing is not None and report.left_routing < 1.5
    # a newcomer sent to the worker itself is refused with 503 while it finishes its streams
    assert report.notes["newcomer_got"] == "503 draining"
    # and the long stream it was running when told to stop still finished
    assert report.notes["long_stream"] == "completed"
    assert int(report.notes["retry_after"]) >= 1
    # then it exits cleanly within the grace period
    assert report.notes["exit_code"] == 0
    assert report.notes["exited_after"] <= full_stack.config.drain_grace


def test_sigstop_makes_the_worker_unroutable_and_its_streams_end_with_its_lease(
    full_stack,
) -> None:
    report = asyncio.run(fs.sigstop(full_stack))
    print(report.line())
    cfg = full_stack.config
    assert report.lost == 0
    assert report.completed + report.failed == report.sent
    assert report.left_routing is not None
    assert report.left_routing <= cfg.lease_duration + 1.0
    # the streams caught on the frozen worker (which still sends nothing at all) end with an
    # error event once its lease expires, not after the gateway's 600 s idle timeout: within the
    # lease, plus the watchdog's 1 s interval and some slack
    errors = report.errors()
    assert 1 <= errors.get(MID_STREAM_FAILURE, 0) <= fs.CLIENTS, errors
    assert set(errors) <= {MID_STREAM_FAILURE, "HTTP 429"}, errors
    assert report.notes["caught_streams"] >= 1
    assert report.notes["caught_ended_after"] <= cfg.lease_duration + 2.0


def test_gateway_restart_fails_requests_only_during_the_restart(full_stack) -> None:
    report = asyncio.run(fs.gateway_restart(full_stack))
    print(report.line())
    assert report.lost == 0
    assert report.notes["errors_outside_window"] == 0
    # clear errors only: refused connections while no gateway listens, streams cut when the
    # old one stops
    clear = ("connection:", "HTTP 503", MID_STREAM_FAILURE)
    assert all(e.startswith(clear) for e in report.errors()), report.errors()
    assert report.completed > fs.CLIENTS
