"""The gateway's request metrics: what is counted, under which labels."""

from __future__ import annotations

from pathlib import Path

import httpx

from .harness import BODY, gateway


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
