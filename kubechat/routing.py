"""Picking a worker for a request: least in-flight among live workers, random among equals.

The router counts in-flight requests itself (acquire on send, release when the response ends),
so a burst spreads across workers at once instead of waiting for the next heartbeat to report
load. No HTTP here: the gateway and the UI do the sending. Thread-safe (Gradio calls from threads).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable

from .discovery.live import LiveView
from .discovery.records import WorkerRecord


class InFlight:
    """One counted request on ``worker``; release it once (a context manager releases on exit)."""

    def __init__(self, router: Router, worker: WorkerRecord) -> None:
        self.router = router
        self.worker = worker
        self._released = False

    def release(self) -> None:
        """Stop counting this request (idempotent)."""
        with self.router._lock:
            if self._released:
                return
            self._released = True
            self.router._decrement(self.worker.name)

    def __enter__(self) -> InFlight:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Router:
    """Chooses among ``view``'s live workers; ``rng`` breaks ties (inject a seeded one in tests)."""

    def __init__(self, view: LiveView, rng: random.Random | None = None) -> None:
        self.view = view
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def pick(self, model: str, exclude: Iterable[str] = frozenset()) -> WorkerRecord | None:
        """The live worker serving ``model`` with the fewest requests in flight, or None.

        ``exclude`` names workers already tried for this request.
        """
        candidates = self._candidates(model, exclude)
        with self._lock:
            return self._choose(candidates)

    def acquire(self, model: str, exclude: Iterable[str] = frozenset()) -> InFlight | None:
        """Pick a worker and count the request on it in one step (None when no worker is live)."""
        candidates = self._candidates(model, exclude)
        with self._lock:
            worker = self._choose(candidates)
            if worker is None:
                return None
            self._in_flight[worker.name] = self._in_flight.get(worker.name, 0) + 1
        return InFlight(self, worker)

    def track(self, worker: WorkerRecord) -> InFlight:
        """Count a request on a worker chosen elsewhere (e.g. by ``pick``)."""
        with self._lock:
            self._in_flight[worker.name] = self._in_flight.get(worker.name, 0) + 1
        return InFlight(self, worker)

    def in_flight(self) -> dict[str, int]:
        """Requests this router has in flight, per worker name (workers with none left out)."""
        with self._lock:
            return dict(self._in_flight)

    def _candidates(self, model: str, exclude: Iterable[str]) -> list[WorkerRecord]:
        excluded = set(exclude)
        return [w for w in self.view.workers(model) if w.name not in excluded]

    def _choose(self, candidates: list[WorkerRecord]) -> WorkerRecord | None:
        if not candidates:
            return None
        least = min(self._in_flight.get(w.name, 0) for w in candidates)
        return self.rng.choice([w for w in candidates if self._in_flight.get(w.name, 0) == least])

    def _decrement(self, name: str) -> None:
        left = self._in_flight.get(name, 0) - 1
        if left > 0:
            self._in_flight[name] = left
        else:
            self._in_flight.pop(name, None)
