"""A whole local stack (``kubechat up examples/demo.yaml``) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI

from tests.support.kube_stack import Cluster, kube_stack
from tests.support.processes import free_port, kubechat_argv, tail, wait_http

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "examples" / "demo.yaml"


@dataclass
class Stack:
    """A running ``kubechat up``: gateway URL, state folder, the up process."""

    url: str
    state_dir: Path
    proc: subprocess.Popen
    log: Path
    ui_url: str | None = None

    @property
    def client(self) -> OpenAI:
        """An openai client on the gateway (no client-side retries: we test ours)."""
        return OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def worker_pids(self) -> dict[str, int]:
        """Worker name -> pid, read from /proc (the processes ``up`` started)."""
        pids = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"worker" in argv and str(self.state_dir).encode() in b" ".join(argv):
                name = argv[argv.index(b"--worker-name") + 1].decode()
                pids[name] = int(entry.name)
        return pids


def demo_cache(demo_model_dir: Path, base: Path | None = None) -> Path:
    """A KUBECHAT_CACHE folder holding the session's already-built demo model.

    ``demo_model_dir`` is ``$KUBECHAT_CACHE/demo-model`` (tests/conftest.py); ``base`` is unused
    and kept for callers that pass it.
    """
    return demo_model_dir.parent


def start_stack(demo_model_dir: Path, base: Path, *extra: str, manifest: Path = DEMO_YAML) -> Stack:
    """Start ``kubechat up MANIFEST`` (examples/demo.yaml unless given) and wait until it prints
    that it is ready."""
    port = free_port()
    state = base / f"state-{port}"
    log = base / f"up-{port}.log"
    env = {
        **os.environ,
        "KUBECHAT_CACHE": str(demo_cache(demo_model_dir, base)),
        "PYTHONUNBUFFERED": "1",
    }
    ui_url = None
    if "--no-ui" not in extra and "--ui-port" not in extra:
        ui_port = free_port()
        extra = (*extra, "--ui-port", str(ui_port))
        ui_url = f"http://127.0.0.1:{ui_port}"
    argv = kubechat_argv(
        "up", str(manifest), "--port", str(port), "--state-dir", str(state), *extra
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 240, proc)
        _wait_for(lambda: "ready." in log.read_text(), 240, proc, log)
    except Exception:
        stop_stack(proc)
        raise
    return Stack(url, state, proc, log, ui_url)


def stop_stack(proc: subprocess.Popen) -> int:
    """Ctrl-C the stack and wait for it to exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _wait_for(cond, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise RuntimeError(f"kubechat up exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"kubechat up not ready:\n{tail(log)}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``kubechat up examples/demo.yaml``: two demo workers behind the gateway."""
    s = start_stack(demo_model_dir, tmp_path_factory.mktemp("stack"))
    yield s
    stop_stack(s.proc)


@pytest.fixture(scope="module")
def cluster(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The Kubernetes stack on the API emulator (tests/support/kube_stack.py), one per module."""
    with kube_stack(demo_model_dir, tmp_path_factory.mktemp("kube-e2e")) as running_cluster:
        yield running_cluster
