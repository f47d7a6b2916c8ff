"""The gateway's request metrics: what is counted, under which labels: unknown models, internal
errors, streams that break off after their 200."""

from __future__ import annotations

from pathlib import Path

import httpx

from kubechat.discovery.live import LiveView
from kubechat.discovery.records import WorkerRecord
from kubechat.gateway.app import create_app
from kubechat.routing import Router
from tests.support.stub_workers import serve, stub_app

from .harness import BODY, STREAM, gateway, record


def test_unknown_models_share_one_label_so_made_up_names_add_no_series(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "ok"}) as gw:
        for i in range(50):
            r = httpx.post(f"{gw.url}/v1/chat/completions", json={**BODY, "model": f"made-up-{i}"})
            assert r.status_code == 404
        assert httpx.post(f"{gw.url}/v1/chat/completions", json=BODY).status_code == 200
        text = gw.metrics()
        assert "made-up" not in text
        assert gw.requests("404", model="-") == 50
        assert gw.requests("200") == 1


class BreakableSource:
    """A worker source that fails to read while ``broken`` (as a lease folder or an API server
    may): the gateway then fails inside, and must say so with a counted 500."""

    def __init__(self, records: list[WorkerRecord]) -> None:
        self.records = records
        self.broken = False

    def snapshot(self) -> list[WorkerRecord]:
        if self.broken:
            raise OSError("the leases cannot be read")
        return list(self.records)


def test_an_internal_error_is_a_counted_500_in_openai_form(tmp_path: Path) -> None:
    with serve(stub_app("ok", "a")) as worker:
        source = BreakableSource([record("a", worker)])
        view = LiveView(source)
        with serve(create_app(view, Router(view))) as url:
            assert httpx.post(f"{url}/v1/chat/completions", json=BODY).status_code == 200
            source.broken = True
            r = httpx.post(f"{url}/v1/chat/completions", json=BODY)
            source.broken = False
            assert r.status_code == 500
            assert r.json()["error"]["type"] == "internal_error"
            text = httpx.get(f"{url}/metrics").text
    assert 'kubechat_gateway_requests_total{code="500",endpoint="chat",model="-"} 1.0' in text
    assert 'kubechat_gateway_requests_total{code="200",endpoint="chat",model="m"} 1.0' in text


def test_a_stream_that_breaks_off_is_counted_as_a_stream_error(tmp_path: Path) -> None:
    with gateway(tmp_path, {"w": "die_mid_stream"}) as gw:
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=STREAM, timeout=10) as r:
            assert r.status_code == 200
            assert "upstream_failed" in r.read().decode()
        errors = 'kubechat_gateway_stream_errors_total{model="m",reason="connection_closed"}'
        assert gw.metric(errors) == 1
        assert gw.requests("200") == 1  # its status was 200: the break is counted apart


def test_stream_error_series_start_at_zero_once_a_model_streams(tmp_path: Path) -> None:
    from kubechat.gateway.metrics import STREAM_ERROR_REASONS

    with gateway(tmp_path, {"a": "ok"}) as gw:
        before = gw.metrics()
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=STREAM) as r:
            assert r.status_code == 200
            r.read()
        after = gw.metrics()
    assert "kubechat_gateway_stream_errors_total{" not in before
    for reason in STREAM_ERROR_REASONS:
        assert f'kubechat_gateway_stream_errors_total{{model="m",reason="{reason}"}} 0.0' in after
