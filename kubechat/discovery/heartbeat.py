"""A worker's heartbeat: renew its lease record every few seconds from an asyncio task.

The heartbeat owns the timing fields (renew time, lease duration); the worker supplies the rest
through ``make_record`` (address, models, readiness, load). Publishing never raises into the
worker: failures are logged and the next beat tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from kubechat.defaults import LEASE_DURATION, LEASE_RENEW_INTERVAL

from .records import LeaseWriter, WorkerRecord

log = logging.getLogger(__name__)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Await an async method; run a plain one in a thread (it may block on I/O)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Heartbeat:
    """Publishes ``make_record()`` through ``writer`` every ``interval`` seconds.

    ``start()`` begins (inside a running event loop), ``mark_draining()`` announces a shutdown at
    once (on SIGTERM), ``stop()`` ends the task and removes the record (clean exit).
    """

    def __init__(
        self,
        writer: LeaseWriter,
        make_record: Callable[[], WorkerRecord],
        interval: float = LEASE_RENEW_INTERVAL,
        *,
        lease_duration: float = LEASE_DURATION,
        clock: Callable[[], float] = time.time,
        stop_timeout: float = 5.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be > 0")
        if lease_duration <= interval:
            raise ValueError("lease duration must be longer than the renew interval")
        self.writer = writer
        self.make_record = make_record
        self.interval = interval
        self.lease_duration = lease_duration
        self.clock = clock
        self.stop_timeout = stop_timeout
        self._draining = False
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.last_published: WorkerRecord | None = None
        self.failures = 0

    @property
    def draining(self) -> bool:
        """Whether ``mark_draining`` was called."""
        return self._draining

    def start(self) -> None:
        """Start beating (the first beat happens at once); call from a running event loop."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def publish_now(self) -> bool:
        """Publish a fresh record now (e.g. once the model has loaded); True on success."""
        async with self._lock:
            try:
                record = self.make_record()
                record = dataclasses.replace(
                    record,
                    renew_time=self.clock(),
                    lease_duration=self.lease_duration,
                    draining=record.draining or self._draining,
                )
                await _call(self.writer.publish, record)
            except Exception as exc:
                self.failures += 1
                if not self._failing:
                    log.warning("heartbeat: publishing the lease failed (will retry): %r", exc)
                else:
                    log.debug("heartbeat: publishing still failing: %r", exc)
                self._failing = True
                return False
            if self._failing:
                log.info("heartbeat: publishing the lease works again")
            self._failing = False
            self.last_published = record
            return True

    async def mark_draining(self) -> None:
        """Announce at once that this worker takes no new requests; later beats keep saying so."""
        self._draining = True
        await self.publish_now()

    async def stop(self) -> None:
        """Stop beating and remove the record (a clean exit leaves no lease behind)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            # Let an in-flight publish finish, so it cannot land after the removal below.
            done, _ = await asyncio.wait({task}, timeout=self.stop_timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        async with self._lock:
            name = self.last_published.name if self.last_published else None
            if name is None:
                return
            try:
                await _call(self.writer.remove, name)
            except Exception as exc:
                log.warning("heartbeat: removing the lease %s failed: %r", name, exc)
            self.last_published = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self.publish_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
