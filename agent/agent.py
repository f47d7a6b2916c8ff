"""The agent's life: renew the lease with what the engine reports, drain on SIGTERM, stop.

A worker pod is something that serves the OpenAI API plus something that renews its lease. With
our own engine both are ``kubechat worker``; with vLLM, vLLM serves and this agent renews, with
the same WorkerRecord (kubechat/discovery/heartbeat.py), so the gateway cannot tell them apart:

- ready while the engine's ``/health`` answers 200 and its ``/metrics`` reads; in flight and
  queued are the engine's running plus waiting requests, and its waiting ones;
- on SIGTERM (or SIGINT): the lease says draining at once, so the gateway sends nothing new; after
  ``drain_settle`` seconds (readers of the lease have seen it by then) the agent waits, up to
  ``drain_grace``, until the engine holds no request, stops the engine when it is the agent's
  child (local mode), removes the lease and exits 0; a second signal stops waiting;
- when its child engine exits on its own, the agent removes the lease and exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence

from kubechat.discovery.heartbeat import Heartbeat
from kubechat.discovery.records import LeaseWriter, WorkerRecord

from .engine_probe import EngineProbe, EngineReading
from .engine_process import EngineProcess
from .health import serve_health

log = logging.getLogger(__name__)


class Agent:
    """Publishes an engine server's lease and drains it; ``run()`` is the whole life."""

    def __init__(
        self,
        probe: EngineProbe,
        *,
        name: str,
        deployment: str,
        address: str,
        capacity: int,
        model_names: Sequence[str] = (),
        writer: LeaseWriter | None = None,
        renew_interval: float = 2.0,
        lease_duration: float = 6.0,
        poll_interval: float = 1.0,
        drain_grace: float = 30.0,
        drain_settle: float = 2.0,
        engine: EngineProcess | None = None,
        engine_stop_timeout: float = 30.0,
        health_address: tuple[str, int] | None = None,
    ) -> None:
        self.probe = probe
        self.name = name
        self.deployment = deployment
        self.address = address
        self.capacity = capacity
        self.model_names = list(model_names)
        self.poll_interval = poll_interval
        self.drain_grace = drain_grace
        self.drain_settle = drain_settle
        self.engine = engine
        self.engine_stop_timeout = engine_stop_timeout
        self.health_address = health_address
        self.reading = EngineReading(False, error="not read yet")
        self.draining = False
        self.heartbeat = (
            Heartbeat(writer, self.record, renew_interval, lease_duration=lease_duration)
            if writer is not None
            else None
        )
        self._stop_requested: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None

    @property
    def ready(self) -> bool:
        """Whether the engine serves: healthy, with its model names known."""
        return self.reading.healthy and bool(self.model_names)

    def routable(self) -> bool:
        """Whether the gateway can send here: a ready lease published, not draining (what the
        agent's ``/health/ready`` says)."""
        if self.draining or not self.ready:
            return False
        published = self.heartbeat.last_published if self.heartbeat else None
        return self.heartbeat is None or (published is not None and published.ready)

    def record(self) -> WorkerRecord:
        """The lease record as of the latest reading."""
        return WorkerRecord(
            name=self.name,
            deployment=self.deployment,
            models=tuple(self.model_names),
            address=self.address,
            ready=self.ready,
            draining=self.draining,
            in_flight=self.reading.busy,
            queued=self.reading.queued,
            capacity=self.capacity,
            renew_time=time.time(),
        )

    def request_stop(self) -> None:
        """First call: drain, then exit. Later calls: stop waiting for the engine's requests."""
        assert self._stop_requested is not None and self._hurry is not None
        if self._stop_requested.is_set():
            log.warning("second stop signal: not waiting for the engine's requests any more")
            self._hurry.set()
        self._stop_requested.set()

    async def run(self) -> int:
        """Start the engine (local mode) and the heartbeat, serve until told to stop or the
        engine exits; the process exit code."""
        self._stop_requested, self._hurry = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        health = None
        try:
            if self.health_address is not None:
                health = await serve_health(*self.health_address, self.routable)
            if self.engine is not None:
                await self.engine.start()
                log.info("engine started (pid %s): %s", self.engine.pid, " ".join(self.engine.argv))
            if self.heartbeat is not None:
                self.heartbeat.start()
            code = await self._serve()
            if code is None:
                code = await self._drain()
            return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if health is not None:
                health.close()
            if self.heartbeat is not None:
                await self.heartbeat.stop()  # the lease goes with the agent
            if self.engine is not None and self.engine.returncode is None:
                await self.engine.stop(self.engine_stop_timeout)
            await self.probe.aclose()

    async def _serve(self) -> int | None:
        """Read the engine every ``poll_interval`` until a stop is requested (None) or the
        child engine exits (its exit code, never 0: it was not asked to)."""
        assert self._stop_requested is not None
        while not self._stop_requested.is_set():
            if self.engine is not None and self.engine.returncode is not None:
                code = self.engine.returncode
                log.error("the engine exited with code %s; the agent stops too", code)
                return code or 1
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), self.poll_interval)
        return None

    async def refresh(self) -> None:
        """Read the engine once; a change of readiness is published at once."""
        was_ready = self.ready
        self.reading = await self.probe.read()
        if self.reading.healthy and not self.model_names:
            with contextlib.suppress(Exception):  # read again at the next poll
                self.model_names = await self.probe.served_models()
        if self.ready != was_ready:
            if self.ready:
                names = ", ".join(self.model_names)
                log.info("engine ready: serving %s at %s", names, self.address)
            else:
                log.warning("engine not ready: %s", self.reading.error)
            if self.heartbeat is not None:
                await self.heartbeat.publish_now()

    async def _drain(self) -> int:
        """Mark the lease draining, let the engine finish what it holds, stop a child engine."""
        assert self._hurry is not None
        self.draining = True
        deadline = time.monotonic() + self.drain_grace
        log.info("draining: no new requests; up to %.0f s for the engine's own", self.drain_grace)
        if self.heartbeat is not None:
            await self.heartbeat.mark_draining()
        # A request the gateway routed just before it saw the draining lease still arrives.
        await self._pause(min(self.drain_settle, self.drain_grace))
        while not self._hurry.is_set() and time.monotonic() < deadline:
            if self.engine is not None and self.engine.returncode is not None:
                break
            await self.refresh()
            if not self.reading.healthy or self.reading.busy == 0:
                break
            await self._pause(self.poll_interval)
        if self.reading.healthy and self.reading.busy:
            log.warning("drain over with %d requests still in the engine", self.reading.busy)
        if self.engine is not None and self.engine.returncode is None:
            code = await self.engine.stop(self.engine_stop_timeout)
            log.info("engine stopped (exit code %s)", code)
        return 0

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless a second stop signal comes first."""
        assert self._hurry is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)
