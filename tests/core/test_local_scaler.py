"""kubechat up's autoscaler on the local lease folder: scale-down retires the least-loaded worker
(SIGTERM, no restart, dropped once it exited) and keeps the busy one."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kubechat.autoscale import AutoscaleState
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord
from kubechat.local_runner import LocalRunner, Process
from kubechat.local_scaler import LocalScaler
from kubechat.spec import parse_model_deployment

MD = {
    "apiVersion": "kubechat.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "d"},
    "spec": {
        "model": {"path": "org/model"},
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "targetRequests": 4,
            "windowSeconds": 1,
            "scaleDownDelaySeconds": 1,
        },
    },
}


def test_scale_down_retires_the_least_loaded_worker(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path, on_event=lambda _: None)
    leases = LocalLeaseStore(tmp_path / "leases")
    events: list[str] = []
    scaler = LocalScaler(
        parse_model_deployment(MD), runner, "127.0.0.1", {}, on_event=events.append
    )
    # two running "workers" (stand-in processes), each with a lease reporting its load
    for name, in_flight in (("d-0", 3), ("d-1", 0)):
        proc = Process(
            name,
            [sys.executable, "-c", "import time; time.sleep(60)"],
            {},
            tmp_path / f"{name}.log",
            "http://127.0.0.1:1",
            role="worker",
        )
        proc.start()
        proc.ready_at = time.monotonic()
        runner.add(proc)
        scaler.workers.append(proc)
        leases.publish(
            WorkerRecord(
                name, "d", ("model",), "http://x", True, False, in_flight, 0, 4, time.time(), 60
            )
        )
    try:
        # the load (3) asked for one worker since long enough: one goes
        scaler.state = AutoscaleState(desired=2, average_load=3.0, sampled_at=time.time(),
                                      below_since=time.time() - 5)  # fmt: skip
        scaler.step()
        assert scaler.state.desired == 1
        assert [p.name for p in scaler.workers] == ["d-0"], "the busy worker stays"
        retired = next(p for p in runner.processes if p.name == "d-1")
        assert retired.retired and not retired.restart
        retired.popen.wait(10)  # SIGTERM ended it
        runner.poll()
        assert [p.name for p in runner.processes] == ["d-0"], "dropped once it exited"
        assert any("d-1: stopping (scale down)" in e for e in events)
        assert any(e.startswith("d: ScaledDown: 2 -> 1 workers") for e in events)
    finally:
        runner.stop_all(grace=1)
