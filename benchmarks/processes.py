"""Starting and stopping the servers a benchmark measures: kubechat workers and gateways."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(
    argv: list[str], ready_url: str, log_path: Path, timeout: float = 600
) -> Iterator[subprocess.Popen]:
    """Run ``argv`` (own process group, output to ``log_path``) until the block ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}; see {log_path}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready_url} not ready after {timeout} s; see {log_path}")
            time.sleep(0.25)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and process id."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kubechat(*args: str) -> list[str]:
    """argv of the ``kubechat`` CLI under this interpreter."""
    return [sys.executable, "-m", "kubechat.cli", *args]


@contextlib.contextmanager
def worker(
    model_dir: Path, name: str, workdir: Path, *extra: str, leases: Path | None = None
) -> Iterator[Served]:
    """A ``kubechat worker`` on ``model_dir`` serving ``name``."""
    port = free_port()
    argv = kubechat(
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
    with server(argv, f"{url}/health/ready", workdir / f"worker-{port}.log") as proc:
        yield Served(url, proc.pid)


@contextlib.contextmanager
def gateway(leases: Path, workdir: Path, model: str) -> Iterator[Served]:
    """A ``kubechat gateway`` over the workers in ``leases``, once it lists ``model``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubechat("gateway", "--port", str(port), "--lease-store", f"local:{leases}")
    with server(argv, f"{url}/health", workdir / f"gateway-{port}.log") as proc:
        deadline = time.monotonic() + 30
        while model not in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway at {url} never saw a worker serving {model}")
            time.sleep(0.2)
        yield Served(url, proc.pid)
