"""Shared fixtures of the chat page's tests: ``kubechat ui`` over a scripted worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from gradio_client import Client

from kubechat.discovery.local_store import LocalLeaseStore
from tests.support.processes import free_port, kubechat_argv, running, wait_http
from tests.support.stub_workers import serve
from tests.ui.stub_worker import stub_app, stub_record

USER, PASSWORD = "alice", "wonderland"  # from --auth-file
ENV_USER, ENV_PASSWORD = "bob", "builder"  # from $KUBECHAT_UI_AUTH
HISTORY_TURNS = 2


@dataclass
class StubUI:
    """A running ``kubechat ui`` and the stand-in worker behind it."""

    url: str
    worker: FastAPI
    leases: Path  # the lease store the page reads (local:DIR)

    def client(self) -> Client:
        """A new browser-like session (its own chat history) logged in."""
        return Client(self.url + "/", auth=(USER, PASSWORD), verbose=False)

    def requests(self) -> list[dict[str, Any]]:
        """Chat requests the worker received so far."""
        return self.worker.state.requests


@pytest.fixture(scope="package")
def stub_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubUI]:
    base = tmp_path_factory.mktemp("ui-page")
    state = base / "state"
    auth_file = base / "auth"
    auth_file.write_text(f"{USER}:{PASSWORD}\n")
    port = free_port()
    worker = stub_app()
    argv = kubechat_argv(
        "ui",
        "--lease-store",
        f"local:{state}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-history-turns",
        str(HISTORY_TURNS),
        "--auth-file",
        str(auth_file),
    )
    url = f"http://127.0.0.1:{port}"
    env = {"KUBECHAT_UI_AUTH": f"{ENV_USER}:{ENV_PASSWORD}"}
    log = base / "ui.log"
    with serve(worker) as address, running(argv, ready_url=None, log_path=log, env=env) as proc:
        wait_http(url + "/", 180, proc)
        # published after the page started: the model list is read again, not fixed at start
        LocalLeaseStore(state).publish(stub_record("stub-1", address))
        yield StubUI(url, worker, state)
