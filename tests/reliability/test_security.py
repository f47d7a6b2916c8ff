"""Security of the HTTP surface: API keys, keys kept out of logs, header limits, CORS."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.gateway import command
from kubechat.gateway.app import GatewayConfig, create_app
from kubechat.routing import Router

from .conftest import API_KEY, AUTH, MODEL, Served

OPEN_PATHS = {"/health", "/metrics"}
# The API's description (schema and its HTML pages) stays public, as vLLM's does: it carries no
# data, and the docs page could not send a key to fetch the schema.
DOC_PATHS = ["/openapi.json", "/docs"]


def gateway_paths(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{url}/openapi.json").json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


@pytest.mark.slow
def test_every_endpoint_but_health_and_metrics_needs_the_key(keyed_gateway: Served) -> None:
    paths = gateway_paths(keyed_gateway.url)
    assert ("POST", "/v1/chat/completions") in paths
    bodies = {
        "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
        "/v1/completions": {"prompt": "hi"},
        "/v1/embeddings": {"input": "hi"},
    }
    # With a valid key the request reaches the worker: a chat model refuses embeddings with its
    # own 400 naming the model (not the gateway's 401).
    served = {"/v1/embeddings": 400}
    for method, path in paths:
        url = keyed_gateway.url + path
        kw = {"json": {"model": MODEL, "max_tokens": 2, **bodies[path]}} if method == "POST" else {}
        if path in OPEN_PATHS:
            assert httpx.request(method, url, **kw).status_code == 200, path
            continue
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEY}):
            r = httpx.request(method, url, headers=headers, **kw)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "invalid_api_key"
        for headers in (AUTH, {"x-api-key": API_KEY}, {"api-key": API_KEY}):
            r = httpx.request(method, url, headers=headers, timeout=60, **kw)
            assert r.status_code == served.get(path, 200), (method, path, r.text)
            if path in served:
                assert r.json()["error"]["param"] == "model", r.text
    for path in DOC_PATHS:
        assert httpx.get(keyed_gateway.url + path).status_code == 200


@pytest.mark.slow
def test_api_keys_never_reach_the_logs(keyed_gateway: Served, real_worker: Served) -> None:
    wrong = "sk-wrong-key-fedcba9876543210"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for headers in (AUTH, {"Authorization": f"Bearer {wrong}"}, {"x-api-key": wrong}):
        httpx.post(f"{keyed_gateway.url}/v1/chat/completions", json=body, headers=headers)
        httpx.post(
            f"{keyed_gateway.url}/v1/chat/completions", json={**body, "model": "x"}, headers=headers
        )
        httpx.get(f"{keyed_gateway.url}/v1/models?api_key=none", headers=headers)
    logs = keyed_gateway.log.read_text() + real_worker.log.read_text()
    assert "/v1/chat/completions" in logs  # the requests were logged, only not their keys
    for secret in (API_KEY, wrong, API_KEY[-12:], wrong[-12:]):
        assert secret not in logs


@pytest.mark.slow
def test_oversized_headers_are_refused_and_the_gateway_lives_on(keyed_gateway: Served) -> None:
    url = f"{keyed_gateway.url}/v1/models"
    r = httpx.get(url, headers={**AUTH, "x-junk": "a" * (40 * 1024)})
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "headers_too_large"
    assert httpx.get(url, headers={**AUTH, "x-junk": "a" * (16 * 1024)}).status_code == 200
    for junk in ({"x-junk": "a" * (1024 * 1024)}, {f"x-h{i}": "v" * 100 for i in range(5000)}):
        try:
            r = httpx.get(url, headers={**AUTH, **junk})
            assert 400 <= r.status_code < 500
        except httpx.TransportError:
            pass  # closed while the client was still sending: refused without buffering it
    assert httpx.get(url, headers=AUTH).status_code == 200


@pytest.mark.slow
def test_worker_refuses_oversized_headers(real_worker: Served) -> None:
    r = httpx.get(f"{real_worker.url}/v1/models", headers={"x-junk": "a" * (40 * 1024)})
    assert r.status_code == 431
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def _app(tmp_path: Path, **config) -> httpx.AsyncClient:
    view = LiveView(LocalLeaseStore(tmp_path / "leases"))
    app = create_app(view, Router(view), GatewayConfig(**config))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw")


PREFLIGHT = {
    "Origin": "https://chat.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_closed_by_default(tmp_path: Path) -> None:
    async with _app(tmp_path) as gw:
        r = await gw.options("/v1/chat/completions", headers=PREFLIGHT)
        assert r.status_code >= 400
        assert not [h for h in r.headers if h.startswith("access-control-")]
        r = await gw.get("/v1/models", headers={"Origin": "https://chat.example.com"})
        assert r.status_code == 200
        assert not [h for h in r.headers if h.startswith("access-control-")]


async def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    async with _app(tmp_path, cors_origins=["https://chat.example.com"]) as gw:
        r = await gw.options("/v1/chat/completions", headers=PREFLIGHT)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await gw.get("/v1/models", headers={"Origin": "https://chat.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        evil = {**PREFLIGHT, "Origin": "https://evil.example.net"}
        r = await gw.options("/v1/chat/completions", headers=evil)
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers
        r = await gw.get("/v1/models", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in r.headers


def test_cors_origin_flag() -> None:
    p = argparse.ArgumentParser()
    command.configure(p)
    args = p.parse_args(
        ["--cors-origin", "https://a.example", "--cors-origin", "https://b.example"]
    )
    assert args.cors_origin == ["https://a.example", "https://b.example"]
    assert p.parse_args([]).cors_origin == []
