"""Fault scenarios on a local kubechat stack: the drivers shared by benchmarks/faults.py and the
reliability tests.

A ``LocalStack`` runs real ``kubechat worker`` processes and a ``kubechat gateway`` on one
machine, sharing a local lease folder, with short lease settings so that faults show quickly.
A scenario keeps a number of streaming clients busy against the gateway (closed loop: each client
sends its next request when the previous one ends), injects one fault, and counts what every
client saw. Nothing here imports the tests: a clone without tests/ can still run the benchmark.

Outcome of each request, as a client sees it:
- completed: the stream ended with ``finish_reason`` and ``[DONE]``;
- failed: an HTTP error status, an error event in the stream, or a connection error — a clear
  answer the client can act on;
- lost: no answer at all within the client's deadline (a hang) — never acceptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kubechat.discovery.local_store import LocalLeaseStore

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported as benchmarks.*
from processes import free_port, kubechat_argv, stop, until, wait_http

MODEL = "kubechat-demo"
CLIENTS = 16  # concurrent streaming clients of every scenario
PROMPT = "Which mountain is the second highest one in the world?"


@dataclass
class StackConfig:
    """Shape and timings of a local stack (short leases so that faults show within seconds)."""

    model_dir: Path
    workdir: Path
    workers: int = 2
    limit: int = 16  # sequences per worker (--limit-worker-concurrency)
    renew_interval: float = 0.5
    lease_duration: float = 2.0
    drain_grace: float = 20.0
    # The gateway runs with its default upstream timeouts (30 s to a stream's first chunk, 600 s
    # of silence mid-response): a frozen worker is noticed by its lease, not by a timeout.
    startup_timeout: float = 180.0


@dataclass
class Proc:
    """One process of the stack."""

    name: str
    argv: list[str]
    url: str
    ready_path: str
    log: Path
    popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.popen is not None and self.popen.poll() is None


class LocalStack:
    """Workers and a gateway as local processes over one lease folder."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.leases = config.workdir / "leases"
        self.gateway_port = free_port()
        c = config
        self.workers: dict[str, Proc] = {}
        for i in range(c.workers):
            name, port = f"fault-{i}", free_port()
            argv = kubechat_argv(
                "worker",
                "--model-path",
                str(c.model_dir),
                "--model-names",
                MODEL,
                "--trust-remote-code",
                "--port",
                str(port),
                "--limit-worker-concurrency",
                str(c.limit),
                "--drain-grace",
                str(c.drain_grace),
                "--lease-store",
                f"local:{self.leases}",
                "--worker-name",
                name,
                "--lease-renew-interval",
                str(c.renew_interval),
                "--lease-duration",
                str(c.lease_duration),
            )
            url = f"http://127.0.0.1:{port}"
            self.workers[name] = Proc(name, argv, url, "/health/ready", c.workdir / f"{name}.log")
        argv = kubechat_argv(
            "gateway",
            "--port",
            str(self.gateway_port),
            "--lease-store",
            f"local:{self.leases}",
        )
        self.gateway = Proc(
            "gateway",
            argv,
            f"http://127.0.0.1:{self.gateway_port}",
            "/health",
            c.workdir / "gateway.log",
        )

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.gateway.url

    def start(self) -> None:
        """Start every process and wait until the gateway routes to all workers."""
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(self.gateway)
        for w in self.workers.values():
            self._spawn(w)
        self._wait_ready(self.gateway)
        for w in self.workers.values():
            self._wait_ready(w)
        self.wait_live(len(self.workers))

    def ensure_workers(self) -> None:
        """Restart any worker that is not running (after a kill), stopped ones continue."""
        for w in self.workers.values():
            if not w.alive():
                self._spawn(w)
        for w in self.workers.values():
            self._wait_ready(w)
        self.wait_live(len(self.workers))

    def restart_gateway(self) -> float:
        """SIGTERM the gateway, start a new one on the same port; seconds until it answers."""
        t0 = time.monotonic()
        self._terminate(self.gateway, grace=30)
        self._spawn(self.gateway)
        self._wait_ready(self.gateway)
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop everything (stopped processes are continued first so they can exit)."""
        for p in [self.gateway, *self.workers.values()]:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
        for p in [self.gateway, *self.workers.values()]:
            self._terminate(p, grace=5)

    def live_workers(self) -> float:
        """How many workers the gateway would route to now (its own gauge)."""
        try:
            return live_workers_in(httpx.get(f"{self.url}/metrics", timeout=2).text)
        except httpx.HTTPError:
            return float("nan")

    def retries(self) -> float:
        """Requests the gateway has retried on another worker so far."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kubechat_gateway_retries_total{")
        )

    def wait_live(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the gateway sees ``count`` live workers."""
        until(
            lambda: self.live_workers() == count,
            timeout,
            interval=0.1,
            what=f"the gateway seeing {count} live workers",
        )

    def _spawn(self, p: Proc) -> None:
        with open(p.log, "ab") as out:
            p.popen = subprocess.Popen(
                p.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def _wait_ready(self, p: Proc) -> None:
        try:
            wait_http(p.url + p.ready_path, self.config.startup_timeout, p.popen)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{p.name}: {exc}; see {p.log}") from exc

    @staticmethod
    def _terminate(p: Proc, grace: float) -> None:
        if p.popen is not None:
            stop(p.popen, grace)


# ---- clients --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one request's client saw."""

    started: float
    ended: float = 0.0
    completed: bool = False
    error: str | None = None  # None when completed, or when lost
    lost: bool = False
    worker: str | None = None


def chat_body(max_tokens: int, n: int = 0) -> dict:
    """The ``n``-th client's streamed chat request, generating exactly ``max_tokens`` tokens.

    No seed: a seeded request may take a slower, one-at-a-time path in the worker.
    """
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{PROMPT} ({n})"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "stream": True,
    }


async def stream_one(client: httpx.AsyncClient, url: str, body: dict, deadline: float) -> Outcome:
    """Send one streamed request; classify how it ended. Past ``deadline`` seconds it is lost."""
    out = Outcome(started=time.monotonic())

    async def consume() -> None:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            out.worker = r.headers.get("x-kubechat-worker")
            if r.status_code != 200:
                await r.aread()
                out.error = f"HTTP {r.status_code}"
                return
            finished = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    out.error = "error event: " + str(event["error"].get("code"))
                    return
                if any(c.get("finish_reason") for c in event.get("choices", [])):
                    finished = True
            if finished:
                out.completed = True
            else:
                out.error = "stream ended without finish_reason"

    try:
        await asyncio.wait_for(consume(), deadline)
    except TimeoutError:
        out.lost = True
    except httpx.HTTPError as exc:
        out.error = f"connection: {type(exc).__name__}"
    out.ended = time.monotonic()
    return out


@dataclass
class Report:
    """Per-scenario figures."""

    scenario: str
    outcomes: list[Outcome]
    retried: int
    left_routing: float | None = None  # seconds from the fault until the gateway stopped routing
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        """Requests sent."""
        return len(self.outcomes)

    @property
    def completed(self) -> int:
        """Requests that completed."""
        return sum(o.completed for o in self.outcomes)

    @property
    def failed(self) -> int:
        """Requests that ended with a clear error (status, error event, connection error)."""
        return sum(o.error is not None for o in self.outcomes)

    @property
    def lost(self) -> int:
        """Requests with no answer within the client's deadline."""
        return sum(o.lost for o in self.outcomes)

    def errors(self) -> dict[str, int]:
        """How many requests failed with each kind of error."""
        kinds: dict[str, int] = {}
        for o in self.outcomes:
            if o.error:
                kinds[o.error] = kinds.get(o.error, 0) + 1
        return kinds

    def line(self) -> str:
        """One printable line of figures."""
        routing = "-" if self.left_routing is None else f"{self.left_routing:.2f}s"
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (
            f"{self.scenario:<16} sent={self.sent:<4} completed={self.completed:<4} "
            f"retried={self.retried:<3} failed_with_error={self.failed:<3} lost={self.lost:<2} "
            f"left_routing={routing}{extra} errors={self.errors()}"
        )


async def closed_loop(
    url: str,
    *,
    duration: float,
    max_tokens: int,
    fault: Callable[[], Awaitable[None]],
    fault_at: float | None = None,
    clients: int = CLIENTS,
    deadline: float = 90.0,
    pause_after_error: float = 0.2,
) -> list[Outcome]:
    """``clients`` streaming clients send requests back to back for ``duration`` seconds;
    ``fault()`` runs ``fault_at`` seconds in (a third of the way by default). Requests in flight
    at the end run to their end."""
    if fault_at is None:
        fault_at = duration / 3
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients)
    timeout = httpx.Timeout(connect=5.0, read=deadline, write=10.0, pool=10.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:

        async def user(i: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                o = await stream_one(client, url, chat_body(max_tokens, i * 1000 + n), deadline)
                outcomes.append(o)
                n += 1
                if not o.completed:
                    await asyncio.sleep(pause_after_error)  # as a client backing off would

        async def inject() -> None:
            await asyncio.sleep(fault_at)
            await fault()

        await asyncio.gather(inject(), *(user(i) for i in range(clients)))
    return outcomes


async def time_until_unroutable(stack: LocalStack, before: float, limit: float) -> float | None:
    """Seconds until the gateway routes to fewer than ``before`` workers (None: not within
    ``limit`` seconds). Taken when the first poll showing it answers: an upper bound, late by
    at most one poll (a kept-alive connection, polled every 20 ms)."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() - t0 < limit:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{stack.url}/metrics")).text
                if live_workers_in(text) < before:
                    return time.monotonic() - t0
            await asyncio.sleep(0.02)
    return None


def live_workers_in(metrics_text: str) -> float:
    """The gateway's live-worker gauge for the demo model, from its /metrics text."""
    prefix = f'kubechat_gateway_live_workers{{model="{MODEL}"}}'
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for_running(worker: Proc, at_least: int, limit: float) -> bool:
    """Wait until ``worker`` generates ``at_least`` sequences (its own gauge); False if it
    does not within ``limit`` seconds."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() - t0 < limit:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(worker.url + "/metrics")).text
                for line in text.splitlines():
                    if line.startswith("kubechat_worker_running ") and (
                        float(line.split()[1]) >= at_least
                    ):
                        return True
            await asyncio.sleep(0.02)
    return False


async def time_until_draining(stack: LocalStack, name: str, limit: float) -> float | None:
    """Seconds until worker ``name``'s lease says it is draining (None: not within ``limit``)."""
    store = LocalLeaseStore(stack.leases)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        records = await asyncio.to_thread(store.snapshot)
        if any(r.name == name and r.draining for r in records):
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---- the scenarios --------------------------------------------------------------------------

# tokens of the stream that keeps a SIGTERMed worker draining (the demo model holds 512)
LONG_STREAM_TOKENS = 400


async def kill_9(stack: LocalStack, *, duration: float = 10.0, max_tokens: int = 96) -> Report:
    """SIGKILL a worker under 16 concurrent streams."""
    victim = stack.workers["fault-0"]
    retries0 = stack.retries()
    left: dict[str, float | None] = {}

    async def fault() -> None:
        # strike while streams are running there, so some are cut mid-way
        await wait_for_running(victim, at_least=4, limit=10.0)
        os.kill(victim.pid, signal.SIGKILL)
        left["t"] = await time_until_unroutable(
            stack, len(stack.workers), stack.config.lease_duration + 5
        )

    outcomes = await closed_loop(stack.url, duration=duration, max_tokens=max_tokens, fault=fault)
    return Report("kill -9", outcomes, int(stack.retries() - retries0), left.get("t"))


async def sigterm(stack: LocalStack, *, duration: float = 10.0, max_tokens: int = 96) -> Report:
    """SIGTERM a worker under 16 concurrent streams: it drains, then exits."""
    victim = stack.workers["fault-0"]
    retries0 = stack.retries()
    info: dict[str, Any] = {}

    async def fault() -> None:
        await wait_for_running(victim, at_least=4, limit=10.0)  # so that there is work to drain
        # A long stream sent to the victim itself keeps the drain busy for seconds, so the
        # newcomer below meets a draining worker, not one that already finished and closed.
        async with httpx.AsyncClient(timeout=30, trust_env=False) as direct:
            anchor = asyncio.create_task(
                stream_one(direct, victim.url, chat_body(LONG_STREAM_TOKENS, -1), 60.0)
            )
            await wait_for_running(victim, at_least=1, limit=5.0)
            t0 = time.monotonic()
            victim.popen.send_signal(signal.SIGTERM)

            async def newcomer() -> None:
                # as soon as the lease says draining, the worker itself refuses a newcomer
                info["marked"] = await time_until_draining(
                    stack, victim.name, stack.config.lease_duration + 5
                )
                try:
                    r = await direct.post(
                        victim.url + "/v1/chat/completions", json=chat_body(1) | {"stream": False}
                    )
                except httpx.HTTPError as exc:
                    info["refused"] = f"{type(exc).__name__}({exc}) after"
                    info["refused_code"] = round(time.monotonic() - t0, 2)
                    return
                info["refused"] = r.status_code
                info["refused_code"] = (r.json().get("error") or {}).get("code")
                info["retry_after"] = r.headers.get("retry-after")

            info["left"], _ = await asyncio.gather(
                time_until_unroutable(stack, len(stack.workers), stack.config.lease_duration + 5),
                newcomer(),
            )
            long_stream = await anchor
        info["long_stream"] = "completed" if long_stream.completed else long_stream.error
        code = await asyncio.to_thread(victim.popen.wait, stack.config.drain_grace + 15)
        info["exit_after"] = time.monotonic() - t0
        info["exit_code"] = code

    outcomes = await closed_loop(stack.url, duration=duration, max_tokens=max_tokens, fault=fault)
    exit_after = info.get("exit_after")
    return Report(
        "SIGTERM",
        outcomes,
        int(stack.retries() - retries0),
        info.get("left"),
        {
            "lease_draining_after": _round(info.get("marked")),
            "newcomer_got": f"{info.get('refused')} {info.get('refused_code')}",
            "long_stream": info.get("long_stream"),
            "retry_after": info.get("retry_after"),
            "exit_code": info.get("exit_code"),
            "exited_after": _round(exit_after),
        },
    )


async def sigstop(stack: LocalStack, *, duration: float = 12.0, max_tokens: int = 96) -> Report:
    """SIGSTOP a worker (a hung process: connections open, nothing answers), continue it later.

    The gateway notices by the worker's lease, which stops being renewed: the streams it was
    serving end with an error event, requests still waiting for its headers go elsewhere."""
    victim = stack.workers["fault-0"]
    retries0 = stack.retries()
    left: dict[str, float | None] = {}
    stopped_at: list[float] = []

    async def fault() -> None:
        await wait_for_running(victim, at_least=4, limit=10.0)
        os.kill(victim.pid, signal.SIGSTOP)
        stopped_at.append(time.monotonic())
        left["t"] = await time_until_unroutable(
            stack, len(stack.workers), stack.config.lease_duration + 5
        )

    try:
        outcomes = await closed_loop(
            stack.url, duration=duration, max_tokens=max_tokens, fault=fault, fault_at=duration / 4
        )
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    # the streams the frozen worker was serving: when did the last one end (by an error event)?
    caught = [
        o for o in outcomes if o.worker == victim.name and stopped_at and o.ended > stopped_at[0]
    ]
    cut = max(o.ended for o in caught) - stopped_at[0] if caught else None
    return Report(
        "SIGSTOP",
        outcomes,
        int(stack.retries() - retries0),
        left.get("t"),
        {"caught_streams": len(caught), "caught_ended_after": _round(cut)},
    )


async def gateway_restart(
    stack: LocalStack, *, duration: float = 12.0, max_tokens: int = 32
) -> Report:
    """Restart the gateway (SIGTERM, start again on the same port) under 16 streaming clients."""
    window: dict[str, float] = {}
    retries0 = stack.retries()

    async def fault() -> None:
        window["start"] = time.monotonic()
        await asyncio.to_thread(stack.restart_gateway)
        window["end"] = time.monotonic()

    outcomes = await closed_loop(stack.url, duration=duration, max_tokens=max_tokens, fault=fault)
    start, end = window.get("start", 0.0), window.get("end", 0.0)
    outside = [o for o in outcomes if o.error and not (start - 0.5 <= o.ended <= end + 1.0)]
    return Report(
        "gateway restart",
        outcomes,
        max(0, int(stack.retries() - retries0)),  # the counter restarts with the process
        None,
        {"window": round(end - start, 2), "errors_outside_window": len(outside)},
    )


async def burst(
    url: str, *, requests: int, max_tokens: int = 16, headers: dict[str, str] | None = None
) -> dict[str, int]:
    """``requests`` streamed requests at once; how many got each status (429s must carry
    Retry-After: those without are counted as ``429-no-retry-after``)."""
    counts: dict[str, int] = {}
    limits = httpx.Limits(max_connections=requests + 4, max_keepalive_connections=requests)
    async with httpx.AsyncClient(
        timeout=120, limits=limits, trust_env=False, headers=headers
    ) as client:

        async def one(i: int) -> None:
            async with client.stream(
                "POST", f"{url}/v1/chat/completions", json=chat_body(max_tokens, i)
            ) as r:
                await r.aread()
                key = str(r.status_code)
                if r.status_code == 429 and not r.headers.get("retry-after"):
                    key = "429-no-retry-after"
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(one(i) for i in range(requests)))
    return counts


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


SCENARIOS = {
    "kill9": kill_9,
    "sigterm": sigterm,
    "sigstop": sigstop,
    "gateway-restart": gateway_restart,
}
