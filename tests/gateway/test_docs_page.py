"""/docs works in an air-gapped cluster: Swagger UI comes from the gateway itself, and like
/openapi.json it is readable without an API key."""

from __future__ import annotations

from pathlib import Path

import httpx

from kubechat.gateway.app import GatewayConfig
from tests.support.docs_pages import check_docs_served_by_the_app, render_docs_offline

from .harness import gateway


def test_docs_load_only_from_the_gateway_and_need_no_key(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "ok"}, GatewayConfig(api_keys=["sk-docs"])) as gw:
        urls = check_docs_served_by_the_app(gw.url)
        assert f"{gw.url}/openapi.json" in urls
        assert httpx.get(f"{gw.url}/v1/models").status_code == 401, "the API keeps its key"
        assert httpx.get(f"{gw.url}/redoc").status_code == 404  # off: it loads a CDN logo
        assert render_docs_offline(gw.url, "/v1/chat/completions") == []
