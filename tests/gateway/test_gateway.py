"""The gateway over scripted workers: routing, retries before the first byte, failures after it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from kubechat.gateway.app import GatewayConfig
from kubechat.upstream import RetryPolicy

from .harness import BODY, FirstChoice, gateway, record


@pytest.mark.parametrize("bad", ["busy", "draining"])
def test_429_and_503_are_retried_on_another_worker(tmp_path: Path, bad: str) -> None:
    # ties go to the first worker by name: every request meets the refusing one first
    with gateway(tmp_path, {"a-bad": bad, "b-ok": "ok"}, rng=FirstChoice()) as gw:
        for _ in range(6):
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY)
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == "from b-ok"
        assert (gw.hits("a-bad"), gw.hits("b-ok")) == (6, 6)
        assert gw.retries("429" if bad == "busy" else "503") == 6


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    with gateway(tmp_path, {"b-alive": "ok"}, rng=FirstChoice()) as gw:
        gw.store.publish(record("a-dead", "http://127.0.0.1:9"))  # nothing listens on port 9
        for _ in range(4):
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY)
            assert r.status_code == 200
            assert r.headers["x-kubechat-worker"] == "b-alive"
        assert gw.retries("connect_error") == 4
        assert gw.hits("b-alive") == 4


def test_all_workers_busy_passes_the_429_through(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "busy", "b": "busy"}) as gw:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"


def test_a_hanging_stream_is_retried_after_the_first_chunk_timeout(tmp_path: Path) -> None:
    config = GatewayConfig(retry=RetryPolicy(attempts=3, deadline=10, first_chunk_timeout=0.5))
    with gateway(tmp_path, {"a-hang": "hang", "b-ok": "ok"}, config) as gw:
        started = time.monotonic()
        for _ in range(2):
            with httpx.stream(
                "POST", f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
            ) as r:
                text = "".join(r.iter_text())
            assert r.status_code == 200
            assert "b-ok" in text
        assert time.monotonic() - started < 5


def test_a_stream_that_dies_midway_ends_with_an_error_event(tmp_path: Path) -> None:
    with gateway(tmp_path, {"only": "die_mid_stream"}) as gw:
        with httpx.stream(
            "POST", f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
        ) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200
        assert json.loads(lines[0][6:])["choices"][0]["delta"]["content"] == "from"
        error = json.loads(lines[-2][6:])
        assert error["error"]["code"] == "upstream_failed"
        assert lines[-1] == "data: [DONE]"
        assert gw.hits("only") == 1  # not retried: the client already had bytes


def test_streams_are_not_buffered(tmp_path: Path) -> None:
    with gateway(tmp_path, {"slow": "slow_stream"}) as gw:
        arrivals = []
        with httpx.stream(
            "POST", f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 3
        assert arrivals[1] - arrivals[0] > 0.2 and arrivals[2] - arrivals[1] > 0.2


def test_least_in_flight_spreads_concurrent_requests(tmp_path: Path) -> None:
    with (
        gateway(tmp_path, {"a": "slow_stream", "b": "slow_stream"}) as gw,
        httpx.Client(timeout=10) as client,
    ):
        streams = [
            client.stream("POST", f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True})
            for _ in range(4)
        ]
        opened = [s.__enter__() for s in streams]
        served = sorted(r.headers["x-kubechat-worker"] for r in opened)
        for s in streams:
            s.__exit__(None, None, None)
    assert served == ["a", "a", "b", "b"]


def test_body_limit_is_413(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "ok"}, GatewayConfig(max_body_bytes=1000)) as gw:
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 2000}]}
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert gw.hits("a") == 0


def test_metrics_can_require_a_key(tmp_path: Path) -> None:
    config = GatewayConfig(api_keys=["k1", "k2"], protect_metrics=True)
    with gateway(tmp_path, {"a": "ok"}, config) as gw:
        assert httpx.get(f"{gw.url}/metrics").status_code == 401
        keyed = httpx.get(f"{gw.url}/metrics", headers={"Authorization": "Bearer k2"})
        assert keyed.status_code == 200
        assert httpx.get(f"{gw.url}/health").status_code == 200
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY, headers={"x-api-key": "k1"})
        assert r.status_code == 200


def test_a_request_without_a_key_is_refused_before_routing_and_counted(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "ok"}, GatewayConfig(api_keys=["k1"])) as gw:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        # refused before its body is validated: a malformed body without a key is a 401, not 422
        assert httpx.post(f"{gw.url}/v1/completions", content=b"{").status_code == 401
        text = httpx.get(f"{gw.url}/metrics").text
        assert gw.hits("a") == 0
    counted = 'kubechat_gateway_requests_total{code="401",endpoint="%s",model="-"} 1.0'
    assert counted % "chat" in text
    assert counted % "completions" in text


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_client_going_away_cancels_the_upstream_stream(tmp_path: Path) -> None:
    errors = _Errors()
    with gateway(tmp_path, {"w1": "endless"}) as gw:
        # added once the servers run: uvicorn's logging setup replaces its loggers' handlers
        logging.getLogger("uvicorn.error").addHandler(errors)
        with httpx.stream(
            "POST", f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
        ) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            assert next(line for line in lines if line).startswith("data: ")
        closed = gw.workers["w1"].state.closed
        assert closed.wait(5), "the worker's stream kept running after the client left"
        # a client leaving is not an error of the gateway's: nothing logged, and it serves on
        assert httpx.post(f"{gw.url}/v1/chat/completions", json=BODY).status_code == 200
    logging.getLogger("uvicorn.error").removeHandler(errors)
    assert errors.messages == []


def test_idle_live_workers_report_zero_in_flight(tmp_path: Path) -> None:
    with gateway(tmp_path, {"w1": "ok", "w2": "ok"}) as gw:
        text = httpx.get(f"{gw.url}/metrics").text
    assert 'kubechat_gateway_worker_in_flight{worker="w1"} 0.0' in text
    assert 'kubechat_gateway_worker_in_flight{worker="w2"} 0.0' in text
