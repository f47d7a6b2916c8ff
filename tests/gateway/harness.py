"""A gateway over scripted workers (tests/support/stub_workers.py) on a local lease store."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI

from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord
from kubechat.gateway.app import GatewayConfig, create_app
from kubechat.routing import Router
from tests.support.stub_workers import serve, stub_app

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True}


class FirstChoice(random.Random):
    """Breaks the router's ties by taking the first tied worker (the lowest name): a test can
    then say which worker is tried first."""

    def choice(self, seq):  # type: ignore[override]
        return seq[0]


def record(name: str, url: str, **kw) -> WorkerRecord:
    """A live record of worker ``name`` serving model ``m`` at ``url``, fresh for an hour."""
    fields = {
        "name": name,
        "deployment": "d",
        "models": ("m",),
        "address": url,
        "ready": True,
        "draining": False,
        "in_flight": 0,
        "queued": 0,
        "capacity": 4,
        "renew_time": time.time() + 3600,
        "lease_duration": 6.0,
    }
    return WorkerRecord(**{**fields, **kw})


@dataclass
class Gateway:
    """A running gateway app, its lease store and its scripted workers."""

    url: str
    store: LocalLeaseStore
    router: Router
    workers: dict[str, FastAPI] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def hits(self, name: str) -> int:
        """Requests worker ``name`` received."""
        return self.workers[name].state.hits

    def metrics(self) -> str:
        """The gateway's /metrics text."""
        return httpx.get(f"{self.url}/metrics").text

    def metric(self, line_prefix: str) -> float | None:
        """The value of the first /metrics sample starting with ``line_prefix`` (None: absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def in_flight(self, worker: str) -> float | None:
        """The gateway's in-flight gauge for ``worker``."""
        return self.metric(f'kubechat_gateway_worker_in_flight{{worker="{worker}"}}')

    def requests(self, code: str, model: str = "m", endpoint: str = "chat") -> float:
        """Requests counted with these labels (0 when none)."""
        labels = f'code="{code}",endpoint="{endpoint}",model="{model}"'
        return self.metric(f"kubechat_gateway_requests_total{{{labels}}}") or 0.0

    def retries(self, reason: str) -> float:
        """Retries counted with ``reason`` (0 when none)."""
        return self.metric(f'kubechat_gateway_retries_total{{model="m",reason="{reason}"}}') or 0.0


@contextlib.contextmanager
def gateway(
    tmp_path: Path,
    workers: dict[str, str],
    config: GatewayConfig | None = None,
    rng: random.Random | None = None,
) -> Iterator[Gateway]:
    """A gateway in front of one scripted worker per ``name: behaviour``."""
    store = LocalLeaseStore(tmp_path / "leases")
    view = LiveView(store)
    router = Router(view, rng=rng)
    with contextlib.ExitStack() as stack:
        apps, addresses = {}, {}
        for name, behaviour in workers.items():
            apps[name] = stub_app(behaviour, name)
            addresses[name] = stack.enter_context(serve(apps[name]))
            store.publish(record(name, addresses[name]))
        url = stack.enter_context(serve(create_app(view, router, config or GatewayConfig())))
        yield Gateway(url, store, router, apps, addresses)
