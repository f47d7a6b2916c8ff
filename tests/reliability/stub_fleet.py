"""Fast scripted workers in their own process, for load tests of the gateway.

``python -m tests.reliability.stub_fleet LEASE_DIR COUNT BEHAVIOUR`` serves COUNT stub workers
(tests/support/stub_workers.py) on free ports, publishes a lease for each into LEASE_DIR (renewed
far into the future) and prints ``ready`` once all listen; it serves until killed. A separate
process keeps the load client and the workers from sharing one interpreter lock.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord
from tests.support.stub_workers import serve, stub_app

MODEL = "m"


def main(lease_dir: str, count: int, behaviour: str) -> None:
    """Serve the stubs until the process is killed."""
    store = LocalLeaseStore(Path(lease_dir))
    with contextlib.ExitStack() as stack:
        for i in range(count):
            name = f"stub-{i}"
            url = stack.enter_context(serve(stub_app(behaviour, name)))
            store.publish(
                WorkerRecord(
                    name=name,
                    deployment="stubs",
                    models=(MODEL,),
                    address=url,
                    ready=True,
                    draining=False,
                    in_flight=0,
                    queued=0,
                    capacity=10_000,
                    renew_time=time.time() + 3600,
                    lease_duration=6.0,
                )
            )
        print("ready", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
