"""/docs works in an air-gapped cluster: Swagger UI comes from the worker itself (the page does
not need the model: it answers while the model loads, or after it failed to)."""

from __future__ import annotations

import httpx

from kubechat.worker.api import create_app
from kubechat.worker.state import WorkerState
from tests.support.docs_pages import check_docs_served_by_the_app, render_docs_offline
from tests.support.stub_workers import serve


def _no_model():
    raise RuntimeError("this test serves no model")


def test_docs_load_only_from_the_worker() -> None:
    with serve(create_app(WorkerState(["m"], _no_model))) as url:
        urls = check_docs_served_by_the_app(url)
        assert f"{url}/openapi.json" in urls
        assert httpx.get(f"{url}/redoc").status_code == 404  # off: it loads a CDN logo
        assert render_docs_offline(url, "/v1/chat/completions") == []
