"""Starting kubechat processes for tests: free ports, waiting for readiness (or any condition),
clean stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubechat_argv(*args: str) -> list[str]:
    """argv running the installed ``kubechat`` CLI with this interpreter."""
    return [sys.executable, "-m", "kubechat.cli", *args]


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, status: int = 200
) -> None:
    """Poll ``url`` until it answers ``status``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last = None
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


def until(
    check: Callable[[], T], timeout: float = 120.0, interval: float = 0.25, what: str = ""
) -> T:
    """Call ``check`` until it returns something true and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}")
        time.sleep(interval)


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
) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in its own process group until the block ends; wait for ``ready_url``."""
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
        stop(proc)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
