"""Which workers may receive traffic now, read from any WorkerSource (local files or Leases)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .records import WorkerRecord, WorkerSource


@dataclass(frozen=True)
class WorkerStatus:
    """A record with its standing at one moment, for status pages."""

    record: WorkerRecord
    live: bool
    reason: str  # "live", or why not: "draining", "not ready", "heartbeat lost (...)"
    heartbeat_age: float  # seconds since the last renewal


class LiveView:
    """Live workers (ready, fresh lease, not draining) from ``source``, as of ``clock()``."""

    def __init__(self, source: WorkerSource, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        # every model name a record read by this view carried, live or not, still there or not
        self._seen: set[str] = set()

    async def start(self) -> None:
        """Start the source's background watch, if it has one."""
        start = getattr(self.source, "start", None)
        if start is not None:
            await start()

    async def stop(self) -> None:
        """Stop the source's background watch, if it has one."""
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            await stop()

    def workers(self, model: str | None = None) -> list[WorkerRecord]:
        """Live workers, sorted by name; only those serving ``model`` when it is given."""
        now = self.clock()
        return sorted(
            (
                r
                for r in self._snapshot()
                if r.is_live(now) and (model is None or model in r.models)
            ),
            key=lambda r: r.name,
        )

    def models(self) -> list[str]:
        """The union of the live workers' served model names, sorted."""
        return sorted({m for r in self.workers() for m in r.models})

    def known_models(self) -> list[str]:
        """Every model name seen in any record this view has read, sorted: those served now and
        those whose workers are gone (exited cleanly, scaled to 0) and may come back."""
        self._snapshot()
        return sorted(self._seen)

    def lost(self, workers: Iterable[WorkerRecord]) -> set[str]:
        """Names of ``workers`` whose lease no longer holds: their record is gone, has expired,
        or now gives another address (a new process under the same name).

        A draining or not-ready worker with a fresh lease still holds it: it is alive, and
        finishes the requests it has.
        """
        now = self.clock()
        current = {r.name: r for r in self._snapshot()}
        gone = set()
        for w in workers:
            r = current.get(w.name)
            if r is None or not r.is_fresh(now) or r.address != w.address:
                gone.add(w.name)
        return gone

    def all_workers(self) -> list[WorkerStatus]:
        """Every known worker, live or not, with the reason, sorted by deployment and name."""
        now = self.clock()
        out = []
        for r in self._snapshot():
            reason = r.not_live_reason(now)
            out.append(WorkerStatus(r, reason is None, reason or "live", r.age(now)))
        return sorted(out, key=lambda s: (s.record.deployment, s.record.name))

    def _snapshot(self) -> list[WorkerRecord]:
        records = self.source.snapshot()
        for r in records:
            self._seen.update(r.models)
        return records
