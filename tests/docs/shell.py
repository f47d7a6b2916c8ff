"""Running documented commands as a user types them: bash in the repository's root, with this
interpreter's ``kubechat`` and ``python``, the tests' ``kubectl`` and ``helm`` on ``PATH`` and a
fresh ``HOME``. Servers (``kubechat up|gateway|operator|ui``) run in the background, each in its
own process group, and are stopped with the shell.

The commands listen on their default ports (the gateway 8000, the chat page 7860, the operator
8080 and 8081), as written; :func:`documented_ports` takes a lock so that only one test process
uses them at a time and fails clearly when something else holds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.support.kube_tools import ensure_helm, ensure_kubectl
from tests.support.processes import stop, tail

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = {8000: "the gateway", 7860: "the chat page", 8080: "operator metrics",
                 8081: "operator health"}  # fmt: skip
SERVERS = {("kubechat", sub) for sub in ("up", "gateway", "operator", "ui", "worker")}


def is_server(command: str) -> bool:
    """Whether a documented command keeps running until stopped."""
    words = shlex.split(command, comments=True)
    return tuple(words[:2]) in SERVERS


def server_ready(command: str) -> Callable[[Path], bool]:
    """How to tell that a server command is ready (given its log): ``kubechat up`` prints
    ``ready.``; the others answer on their health URL (default port, or the one given)."""
    words = shlex.split(command, comments=True)
    if words[1] == "up":
        return lambda log: "ready." in log.read_text(errors="replace").splitlines()
    flag, default, path = {
        "gateway": ("--port", 8000, "/health"),
        "worker": ("--port", 21002, "/health"),
        "ui": ("--port", 7860, "/"),
        "operator": ("--health-port", 8081, "/healthz"),
    }[words[1]]
    port = _flag_value(words, flag) or str(default)
    return lambda _log: _answers(f"http://127.0.0.1:{port}{path}")


def _flag_value(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(f"{flag}="):
            return word.split("=", 1)[1]
    return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def documented_ports() -> Iterator[None]:
    """Hold the lock of the documented default ports; fail when another program listens there."""
    lock_path = Path(tempfile.gettempdir()) / "kubechat-docs-default-ports.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for port, role in DEFAULT_PORTS.items():
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind(("0.0.0.0", port))
                    except OSError as exc:
                        raise AssertionError(
                            f"port {port} ({role}) is taken ({exc}): the documented commands "
                            "use it as written; stop what listens there to run tests/docs"
                        ) from None
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class DocShell:
    """A user's shell for documented commands; a context manager that stops its servers."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.base = base
        home = base / "home"
        home.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(
            [str(ensure_kubectl().parent), str(ensure_helm().parent),
             str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        )  # fmt: skip
        self.env = {**os.environ, "PATH": path, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.env.update(env or {})
        self.servers: dict[str, tuple[subprocess.Popen, Path]] = {}

    def run(self, command: str, timeout: float = 120, check: bool = True) -> str:
        """Run ``command`` with bash; its stdout (with ``check=False``, stdout and stderr). With
        ``check``, a non-zero exit fails with both outputs."""
        result = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if not check:
            return result.stdout + result.stderr
        if result.returncode != 0:
            raise AssertionError(
                f"`{command}` exited {result.returncode}\n"
                f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
            )
        return result.stdout

    def python(self, program: str, timeout: float = 120) -> str:
        """Run a documented Python program with this interpreter; its stdout."""
        result = subprocess.run(
            [sys.executable, "-c", program], cwd=REPO, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"the program exited {result.returncode}:\n{result.stderr}")
        return result.stdout

    def start(self, command: str, timeout: float = 300) -> Path:
        """Start a server command (once: a command already running is left as it is) and wait
        until it is ready (:func:`server_ready`); return its log's path."""
        ready = server_ready(command)
        if command in self.servers:
            return self.servers[command][1]
        log = self.base / f"server-{len(self.servers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=REPO, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.servers[command] = (proc, log)
        deadline = time.monotonic() + timeout
        while not ready(log):
            if proc.poll() is not None:
                raise AssertionError(f"`{command}` exited {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"`{command}` not ready after {timeout}s:\n{tail(log)}")
            time.sleep(0.3)
        return log

    def stop(self, command: str) -> int:
        """Stop a server (SIGTERM to its group, as Ctrl-C or a pod's stop would); its exit code."""
        proc, _ = self.servers.pop(command)
        return stop(proc, grace=60)

    def __enter__(self) -> DocShell:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for command in reversed(list(self.servers)):
            self.stop(command)
