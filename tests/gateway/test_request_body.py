"""The gateway reads and checks request bodies itself: what a client sends wrong gets a 400 in
OpenAI's error format before any worker sees it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from .harness import BODY, gateway

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (None, json.dumps(BODY).encode(), "Content-Type: application/json"),
        ("text/plain", json.dumps(BODY).encode(), "Content-Type: application/json"),
        ("application/x-www-form-urlencoded", b"model=m", "Content-Type: application/json"),
        ("application/json", b"", "Field required"),
        ("application/json", b'{"model": "m", "messages": [', "not valid JSON"),
        ("application/json", b'{"model": "\xff\xfe\xfa"}', "error parsing the body"),
        ("application/json", b"[1, 2]", "must be a JSON object"),
        ("application/json", json.dumps({**BODY, "max_tokens": "ten"}).encode(), "max_tokens"),
    ],
    ids=["no-type", "text", "form", "empty", "truncated", "not-utf8", "array", "bad-field"],
)
def test_a_bad_body_is_a_400_before_any_worker(
    tmp_path: Path, content_type: str | None, body: bytes, message: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with gateway(tmp_path, {"a": "ok"}) as gw:
        r = httpx.post(f"{gw.url}{CHAT}", content=body, headers=headers)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert message in error["message"]
        assert error["type"] == "invalid_request_error"
        assert gw.hits("a") == 0
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'kubechat_gateway_requests_total{code="400",endpoint="chat",model="-"} 1.0' in metrics


def test_json_media_types_and_vendor_fields_pass(tmp_path: Path) -> None:
    body = json.dumps({**BODY, "vendor_extra": {"x": 1}}).encode()
    with gateway(tmp_path, {"a": "ok"}) as gw:
        for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
            r = httpx.post(f"{gw.url}{CHAT}", content=body, headers={"content-type": content_type})
            assert r.status_code == 200, (content_type, r.text)
        assert gw.hits("a") == 2
