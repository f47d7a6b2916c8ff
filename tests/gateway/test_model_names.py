"""Which model names the gateway answers 404 for, and which 503: a model it has seen served
(from any worker record, live or not) that has no live worker now may come back (its workers
exited cleanly, or were scaled to 0): 503 with Retry-After. Only a model never seen is a 404."""

from __future__ import annotations

from pathlib import Path

import httpx

from .harness import BODY, gateway


def test_a_model_whose_workers_all_exited_is_503_and_a_model_never_seen_is_404(
    tmp_path: Path,
) -> None:
    with gateway(tmp_path, {"a": "ok", "b": "ok"}) as gw:
        # the gateway only listed its models: no request was routed to them
        assert [m["id"] for m in httpx.get(f"{gw.url}/v1/models").json()["data"]] == ["m"]
        gw.store.remove("a")
        gw.store.remove("b")  # scaled to 0: no record left at all
        assert httpx.get(f"{gw.url}/v1/models").json()["data"] == []
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "no_live_worker"
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={**BODY, "model": "never-served"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"
        assert gw.requests("503") == 1 and gw.requests("404", model="-") == 1
