"""Bad requests a hostile or careless client sends, and what a kubechat endpoint must answer.

Shared by the reliability tests (tests/reliability/test_bad_input.py) and the fault script
(benchmarks/faults.py --scenario bad-input). Each case is raw bytes on the wire, so JSON escapes
such as lone surrogates arrive exactly as such a client would send them.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import httpx

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ERROR_KEYS = {"message", "type", "param", "code"}


class Case(NamedTuple):
    """One bad request and the answer it must get."""

    id: str
    path: str
    body: bytes
    status: int
    param: str | None  # the field the error must name, when there is one


def chat(model: str, /, **fields: object) -> bytes:
    """A small valid chat body for ``model`` with ``fields`` set (or spoiled)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(fields)
    return json.dumps(body).encode()


def raw_chat(model: str, content_json: str) -> bytes:
    """A chat body whose message content is the given JSON string literal, byte for byte."""
    head = json.dumps({"model": model, "max_tokens": 4})[:-1]
    return f'{head}, "messages": [{{"role": "user", "content": {content_json}}}]}}'.encode()


def cases(model: str, worker_limit: int) -> list[Case]:
    """Every hand-written case for an endpoint serving ``model`` whose worker runs at most
    ``worker_limit`` sequences at once."""
    # (id, path, body bytes, status, param the error must name or None)
    rows = [
        ("truncated-json", CHAT, b'{"model": "x", "messages": [', 400, None),
        ("not-json", CHAT, b"hello", 400, None),
        ("json-array", CHAT, b"[]", 400, None),
        ("json-null", CHAT, b"null", 400, None),
        ("json-string", CHAT, b'"hi"', 400, None),
        ("empty-body", CHAT, b"", 400, None),
        ("messages-string", CHAT, chat(model, messages="hi"), 400, "messages"),
        ("messages-empty", CHAT, chat(model, messages=[]), 400, "messages"),
        (
            "message-no-role",
            CHAT,
            chat(model, messages=[{"content": "hi"}]),
            400,
            "messages.0.role",
        ),
        (
            "message-bad-role",
            CHAT,
            chat(model, messages=[{"role": "wizard", "content": "x"}]),
            400,
            None,
        ),
        ("content-number", CHAT, chat(model, messages=[{"role": "user", "content": 5}]), 400, None),
        ("max-tokens-string", CHAT, chat(model, max_tokens="ten"), 400, "max_tokens"),
        ("max-tokens-negative", CHAT, chat(model, max_tokens=-1), 400, "max_tokens"),
        ("max-tokens-zero", CHAT, chat(model, max_tokens=0), 400, "max_tokens"),
        ("max-tokens-huge", CHAT, chat(model, max_tokens=10**30), 400, "max_tokens"),
        ("max-tokens-float", CHAT, chat(model, max_tokens=1.5), 400, "max_tokens"),
        ("temperature-string", CHAT, chat(model, temperature="hot"), 400, "temperature"),
        ("temperature-nan", CHAT, chat(model, temperature=float("nan")), 400, "temperature"),
        ("stream-list", CHAT, chat(model, stream=[]), 400, "stream"),
        (
            "repetition-penalty-tiny",
            CHAT,
            chat(model, repetition_penalty=1e-100),
            400,
            "repetition_penalty",
        ),
        ("n-over-worker-limit", CHAT, chat(model, n=worker_limit + 1), 400, "n"),
        ("n-huge", CHAT, chat(model, n=10**6), 400, "n"),
        ("stop-empty-string", CHAT, chat(model, stop=[""]), 400, "stop"),
        ("model-missing", CHAT, b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
        ("model-empty", CHAT, chat(model, model=""), 400, "model"),
        ("model-object", CHAT, chat(model, model={"a": 1}), 400, "model"),
        ("lone-high-surrogate", CHAT, raw_chat(model, '"\\ud800 hi"'), 400, "messages.0.content"),
        ("lone-low-surrogate", CHAT, raw_chat(model, '"x\\udfff"'), 400, "messages.0.content"),
        (
            "surrogate-in-part",
            CHAT,
            raw_chat(model, '[{"type": "text", "text": "\\ud83d"}]'),
            400,
            "messages.0.content.0.text",
        ),
        (
            "image-part",
            CHAT,
            raw_chat(model, '[{"type": "image_url", "image_url": "x"}]'),
            400,
            None,
        ),
        (
            "invalid-utf8",
            CHAT,
            b'{"model": "x", "messages": [{"role": "user", "content": "\xff"}]}',
            400,
            None,
        ),
        (
            "prompt-surrogate",
            COMPLETIONS,
            b'{"model": "%s", "prompt": "\\udc00", "max_tokens": 2}' % model.encode(),
            400,
            "prompt",
        ),
        (
            "prompt-empty-list",
            COMPLETIONS,
            json.dumps({"model": model, "prompt": []}).encode(),
            400,
            None,
        ),
        (
            "prompt-empty-ids",
            COMPLETIONS,
            json.dumps({"model": model, "prompt": [[]]}).encode(),
            400,
            None,
        ),
        (
            "prompt-bad-token-id",
            COMPLETIONS,
            json.dumps({"model": model, "prompt": [1, -5]}).encode(),
            400,
            "prompt",
        ),
        (
            "prompt-token-id-huge",
            COMPLETIONS,
            json.dumps({"model": model, "prompt": [10**12]}).encode(),
            400,
            "prompt",
        ),
        ("unknown-model", CHAT, chat(model, model="no-such-model"), 404, "model"),
    ]
    return [Case(*row) for row in rows]


def problem(r: httpx.Response, status: int, param: str | None) -> str | None:
    """What is wrong with ``r`` as the OpenAI error ``status`` naming ``param`` (None: nothing)."""
    if r.status_code != status:
        return f"status {r.status_code}, expected {status}: {r.text[:200]}"
    if not r.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {r.headers.get('content-type')!r}"
    try:
        body = r.json()
    except ValueError:
        return f"not JSON: {r.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if set(body) != {"error"} or not isinstance(error, dict) or set(error) != ERROR_KEYS:
        return f"not an OpenAI error: {body}"
    if not error["message"]:
        return "empty message"
    expected_type = "not_found_error" if status == 404 else "invalid_request_error"
    if error["type"] != expected_type:
        return f"type {error['type']!r}, expected {expected_type!r}"
    if param is not None and not (error["param"] or "").startswith(param):
        return f"param {error['param']!r}, expected {param!r}"
    return None


def oversized(model: str, limit: int) -> Case:
    """A chat body just over ``limit`` bytes: the endpoint must answer 413."""
    body = chat(model, messages=[{"role": "user", "content": "x" * limit}])
    return Case("oversized-body", CHAT, body, 413, None)


async def send_all(
    url: str, all_cases: list[Case], headers: dict[str, str] | None = None
) -> dict[str, tuple[int, str | None]]:
    """Send every case to ``url``; case id -> (status, what was wrong or None)."""
    found: dict[str, tuple[int, str | None]] = {}
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        for case in all_cases:
            r = await client.post(
                url + case.path,
                content=case.body,
                headers={"content-type": "application/json", **(headers or {})},
            )
            found[case.id] = (r.status_code, problem(r, case.status, case.param))
    return found
