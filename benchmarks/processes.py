"""Starting, waiting for and stopping processes: the benchmarks' servers and the tests' (which
import this module through tests/support/processes.py).

Free ports come from ``kubechat.local_runner`` (the one ``kubechat up`` uses); ``until`` and
``until_async`` wait for any condition, ``wait_http`` for an answer, ``running`` runs a command
in its own process group for the length of a block, ``stop`` ends one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from kubechat.local_runner import KUBECHAT
from kubechat.local_runner import free_port as free_port  # the one implementation, re-exported

T = TypeVar("T")


def kubechat_argv(*args: str) -> list[str]:
    """argv running the installed ``kubechat`` CLI with this interpreter."""
    return [*KUBECHAT, *args]


def until(
    check: Callable[[], T], timeout: float = 120.0, interval: float = 0.25, what: str = ""
) -> T:
    """Call ``check`` until it returns something true and return that; AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}")
        time.sleep(interval)


async def until_async(
    check: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> T:
    """:func:`until` inside an event loop: sleeps without blocking the loop between checks."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}")
        await asyncio.sleep(interval)


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, status: int = 200
) -> None:
    """Poll ``url`` until it answers ``status``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == status:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def running(
    argv: list[str],
    *,
    ready_url: str | None,
    log_path: Path,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
    grace: float = 15.0,
) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in its own process group (output to ``log_path``) until the block ends, then
    :func:`stop` it within ``grace`` seconds; first wait for ``ready_url`` to answer 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    try:
        if ready_url:
            try:
                wait_http(ready_url, timeout, proc)
            except Exception as exc:
                raise RuntimeError(f"{exc}\n--- log {log_path} ---\n{tail(log_path)}") from exc
        yield proc
    finally:
        stop(proc, grace)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and process id."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def worker(
    model_dir: Path, name: str, workdir: Path, *extra: str, leases: Path | None = None
) -> Iterator[Served]:
    """A ``kubechat worker`` on ``model_dir`` serving ``name``."""
    port = free_port()
    argv = kubechat_argv(
        "worker",
        "--model-path",
        str(model_dir),
        "--model-names",
        name,
        "--trust-remote-code",
        "--port",
        str(port),
        *extra,
    )
    if leases is not None:
        argv += ["--lease-store", f"local:{leases}", "--worker-name", f"bench-{port}"]
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"worker-{port}.log"
    with running(
        argv, ready_url=f"{url}/health/ready", log_path=log, timeout=600, grace=30
    ) as proc:
        yield Served(url, proc.pid)


@contextlib.contextmanager
def gateway(leases: Path, workdir: Path, model: str) -> Iterator[Served]:
    """A ``kubechat gateway`` over the workers in ``leases``, once it lists ``model``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubechat_argv("gateway", "--port", str(port), "--lease-store", f"local:{leases}")
    log = workdir / f"gateway-{port}.log"
    with running(argv, ready_url=f"{url}/health", log_path=log, timeout=600, grace=30) as proc:
        until(
            lambda: model in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]},
            timeout=30,
            interval=0.2,
            what=f"the gateway at {url} seeing a worker serving {model}",
        )
        yield Served(url, proc.pid)
