"""A sustained burst of streams for the autoscaling scenarios: concurrent clients that keep
streaming until the autoscaler has raised the replicas to a target (bounded), while a watcher
records the most replicas it saw."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

#: An answer: its status code and its whole body.
Answer = tuple[int, str]


class Burst(NamedTuple):
    """What a burst left: every client's answers and the most replicas seen while it ran."""

    answers: list[Answer]
    most: int


def sustained_burst(
    stream: Callable[[], Answer],
    replicas: Callable[[], int],
    *,
    target: int,
    clients: int = 8,
    limit: float = 180.0,
) -> Burst:
    """Run ``clients`` concurrent clients, each calling ``stream`` once and then again until
    ``replicas()`` has been seen at ``target`` or ``limit`` seconds have passed; ``replicas`` is
    polled every 0.2 s from a watcher thread for the length of the burst.

    The burst is sustained rather than one round because on an idle machine one round of streams
    ends long before a new worker has loaded its model.
    """
    seen = {"most": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen["most"] = max(seen["most"], replicas())
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        burst_end = time.monotonic() + limit

        def sustained(_: int) -> list[Answer]:
            got = [stream()]
            while seen["most"] < target and time.monotonic() < burst_end:
                got.append(stream())
            return got

        with ThreadPoolExecutor(clients) as pool:
            answers = [a for many in pool.map(sustained, range(clients)) for a in many]
    finally:
        done.set()
        watcher.join()
    return Burst(answers, seen["most"])
