"""Scale from zero at the gateway: a request for an autoscaled model with no live worker waits,
demand is written to the store, the request goes through once a worker is live (streams too),
and at the deadline it is a 503 with Retry-After; held requests and cold starts are metrics."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from pathlib import Path

import httpx

from kubechat.discovery.demand import LocalDemand, ScalableDeployment
from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.gateway.app import GatewayConfig, create_app
from kubechat.routing import Router
from tests.support.stub_workers import serve, stub_app

from .harness import BODY, STREAM, record


@contextlib.contextmanager
def scaled_to_zero(tmp_path: Path, hold_timeout: float):
    """A gateway whose model ``m`` belongs to an autoscaled deployment with no worker."""
    leases = tmp_path / "leases"
    store = LocalLeaseStore(leases)
    demand = LocalDemand(leases)
    demand.declare(ScalableDeployment("", "d", ("m",)))
    view = LiveView(store)
    app = create_app(view, Router(view), GatewayConfig(hold_timeout=hold_timeout), demand=demand)
    with serve(app) as url:
        yield url, store, demand


def start_worker_on_demand(store: LocalLeaseStore, demand: LocalDemand, stop: threading.Event):
    """Play ``kubechat up``: once the deployment is wanted, start a worker a second later."""
    with contextlib.ExitStack() as stack:
        while not stop.is_set() and demand.demand("d") is None:
            time.sleep(0.05)
        if stop.is_set():
            return
        time.sleep(1.0)
        store.publish(record("w", stack.enter_context(serve(stub_app("ok", "w")))))
        stop.wait()


def metric(url: str, name: str) -> float | None:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_held_requests_go_through_once_a_worker_starts(tmp_path: Path) -> None:
    with scaled_to_zero(tmp_path, hold_timeout=30) as (url, store, demand):
        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["m"], "listed at zero workers"
        assert demand.demand("d") is None, "listing it asks for nothing"
        stop = threading.Event()
        runner = threading.Thread(target=start_worker_on_demand, args=(store, demand, stop))
        runner.start()
        try:

            def chat(body: dict) -> httpx.Response:
                return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(chat, [BODY, STREAM, BODY, STREAM]))
            waited = time.monotonic() - started
            assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
            assert answers[0].json()["choices"][0]["message"]["content"] == "from w"
            # the stream holds nothing but its content: no error event, no comment before it
            assert answers[1].text.startswith("data: ") and "error" not in answers[1].text
            assert answers[1].text.rstrip().endswith("data: [DONE]")
            assert waited >= 1.0
            assert metric(url, 'kubechat_gateway_cold_start_seconds_count{model="m"}') == 1
            assert metric(url, 'kubechat_gateway_held_requests{model="m"}') == 0
            assert metric(url, 'kubechat_gateway_held_timeouts_total{model="m"}') == 0
            # a live worker now: nothing is held
            assert httpx.post(f"{url}/v1/chat/completions", json=BODY).status_code == 200
            assert metric(url, 'kubechat_gateway_cold_start_seconds_count{model="m"}') == 1
        finally:
            stop.set()
            runner.join(10)


def test_held_request_gets_503_with_retry_after_at_the_deadline(tmp_path: Path) -> None:
    with scaled_to_zero(tmp_path, hold_timeout=1.0) as (url, _, demand):
        started = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json=STREAM, timeout=30)
        assert 1.0 <= time.monotonic() - started < 10
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "model_starting"
        assert "is starting" in r.json()["error"]["message"]
        assert demand.demand("d") is not None, "demand was written while the request waited"
        assert metric(url, 'kubechat_gateway_held_timeouts_total{model="m"}') == 1
        assert metric(url, 'kubechat_gateway_held_requests{model="m"}') == 0
        # a name no deployment serves is still a 404, at once
        r = httpx.post(f"{url}/v1/chat/completions", json={**BODY, "model": "nope"})
        assert r.status_code == 404
