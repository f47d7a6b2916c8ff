"""Local processes for ``kubechat up``: start, watch, restart, drain and stop them.

Plays for a laptop the part the operator and the kubelet play in a cluster: each WorkerPlan of
the shared plan becomes a ``kubechat worker`` process on a free port, renewing its lease in a local
state folder, restarted with a back-off if it crashes. Children die with their parent (Linux
PR_SET_PDEATHSIG), so a killed ``kubechat up`` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .defaults import DRAIN_GRACE
from .plan import WorkerLaunch, WorkerPlan, worker_command_args

KUBECHAT = (sys.executable, "-m", "kubechat.cli")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Process:
    """One supervised process: what to run, its log, and its restarts."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    url: str  # base URL, for readiness and printing
    ready_path: str = "/health"
    role: str = "front"  # "worker" processes are stopped first, the front (gateway, UI) after
    restart: bool = True
    retired: bool = False  # told to stop for good (scale down): dropped once it has exited
    popen: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    _next_start: float = 0.0

    def start(self) -> None:
        """Start (or restart) the process, appending to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()
        self.ready_at = None

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def local_env(plan: WorkerPlan) -> dict[str, str]:
    """The plan's environment minus what points into volumes, which are not mounted locally
    (e.g. HF_HOME on the model PVC): locally the machine's own hub cache and paths apply."""
    mounts = [v.mount_path.rstrip("/") + "/" for v in plan.volumes]
    skip = {k for k, v in plan.env.items() if any((v + "/").startswith(m) for m in mounts)}
    if skip and "HF_HOME" in skip:
        skip.add("HF_HUB_OFFLINE")  # offline only made sense with the volume's cache
    return {k: v for k, v in plan.env.items() if k not in skip}


@dataclass
class LocalRunner:
    """Supervises the stack's processes."""

    state_dir: Path
    processes: list[Process] = field(default_factory=list)
    on_event: Callable[[str], None] = print
    vllm_python: str | None = None  # vLLM's environment, for workers with spec.engine: vllm

    def add_worker(
        self,
        plan: WorkerPlan,
        *,
        host: str,
        env: dict[str, str],
        drain_grace: float | None = None,
    ) -> Process:
        """A worker process for one replica of the plan, on a free port; ``drain_grace``: the
        seconds it may finish its requests in once told to stop (the worker's default: None)."""
        port = free_port(host)
        name = f"{plan.deployment}-{plan.replica}"
        leases = f"local:{self.state_dir / 'leases'}"
        launch = WorkerLaunch(host, port, leases, name=name, drain_grace=drain_grace)
        proc = Process(
            name,
            self._worker_argv(plan, launch),
            {**env, **local_env(plan)},
            self.state_dir / "logs" / f"{name}.log",
            f"http://{host}:{port}",
            ready_path="/health/ready",
            role="worker",
        )
        self.processes.append(proc)
        return proc

    def _worker_argv(self, plan: WorkerPlan, launch: WorkerLaunch) -> list[str]:
        """``kubechat worker``; for vLLM, ``kubechat agent`` (its /health/ready on the launch's
        port) with vLLM's server as its child on a port of its own. The agent stops vLLM once
        drained, so vLLM gets no --shutdown-timeout of its own."""
        args = worker_command_args(plan, launch)
        if plan.vllm is None:
            return [*KUBECHAT, "worker", *args]
        if self.vllm_python is None:
            raise ValueError(f"{plan.deployment}: engine vllm needs vLLM's Python environment")
        port = free_port(launch.host)
        server = plan.vllm.argv(self.vllm_python, launch.host, port)
        engine_url = f"http://{launch.host}:{port}"
        return [*KUBECHAT, "agent", *args, "--engine-url", engine_url, "--", *server]

    def add(self, proc: Process) -> Process:
        """Supervise another process (gateway, UI)."""
        self.processes.append(proc)
        return proc

    def start_all(self) -> None:
        """Start every process."""
        for p in self.processes:
            p.start()

    def poll(self) -> None:
        """Notice readiness, crashes and due restarts; call every fraction of a second."""
        import httpx

        now = time.monotonic()
        for p in list(self.processes):  # a retired process may leave the list
            if p.popen is None and p.retired:
                self.processes.remove(p)
                continue
            if p.popen is None:
                if now >= p._next_start:
                    p.start()
                    self.on_event(f"{p.name}: restarted (restart #{p.restarts})")
                continue
            code = p.popen.poll()
            if code is not None and p.retired:
                self.on_event(f"{p.name}: stopped (exit code {code})")
                self.processes.remove(p)
                continue
            if code is not None:
                self.on_event(f"{p.name}: exited with code {code}; log {p.log_path}")
                p.popen = None
                if p.restart:
                    p.restarts += 1
                    p._next_start = now + min(30.0, 2.0 ** min(p.restarts, 5))
                continue
            if p.ready_at is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(p.url + p.ready_path, timeout=1).status_code == 200:
                        p.ready_at = now
                        self.on_event(f"{p.name}: ready in {now - p.started_at:.1f} s at {p.url}")

    def retire(self, proc: Process) -> None:
        """Stop ``proc`` for good: SIGTERM (a worker drains first), no restart; it leaves the
        list once it has exited (``poll``), or is killed with the rest by ``stop_all``."""
        proc.restart = False
        proc.retired = True
        proc.signal(signal.SIGTERM)

    def all_ready(self) -> bool:
        """Whether every process has passed its readiness check."""
        return all(p.ready_at is not None and p.alive for p in self.processes)

    def stop_all(self, grace: float = DRAIN_GRACE) -> None:
        """Stop the workers, then the front (gateway, chat page).

        Workers get SIGTERM and drain: they refuse new requests and finish their streams,
        which reach the clients through the gateway; a worker still running ``grace`` seconds
        later (plus a moment to exit on its own) is killed. Only then is the front stopped (it
        has nothing left in flight by then), so its own shorter graceful shutdown never cuts a
        stream a worker was still finishing.
        """
        for p in self.processes:
            p.restart = False
        _stop([p for p in self.processes if p.role == "worker"], grace + EXIT_MARGIN)
        _stop([p for p in self.processes if p.role != "worker"], FRONT_GRACE)


EXIT_MARGIN = 5.0  # a worker whose drain grace is over still closes its connections and exits
FRONT_GRACE = 15.0  # the gateway's own graceful shutdown (gateway/command.py) fits in this


def _stop(processes: list[Process], grace: float) -> None:
    """SIGTERM ``processes``, wait up to ``grace`` s for them all, then SIGKILL the rest."""
    for p in processes:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        if p.popen is None:
            continue
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(5)
