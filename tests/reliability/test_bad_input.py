"""Bad input, sent to the worker and through the gateway: always a 4xx OpenAI error, never a 5xx.

Each case is raw bytes on the wire (so JSON escapes such as lone surrogates arrive exactly as a
hostile client would send them); valid but unusual text (emoji, right-to-left, NUL) is served.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import AUTH, GATEWAY_BODY_LIMIT, MODEL, WORKER_LIMIT, Served

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ERROR_KEYS = {"message", "type", "param", "code"}


def chat(**fields) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(fields)
    return json.dumps(body).encode()


def raw_chat(content_json: str) -> bytes:
    """A chat body whose message content is the given JSON string literal, byte for byte."""
    head = json.dumps({"model": MODEL, "max_tokens": 4})[:-1]
    return f'{head}, "messages": [{{"role": "user", "content": {content_json}}}]}}'.encode()


# (id, path, body bytes, status, param the error must name or None)
CASES = [
    ("truncated-json", CHAT, b'{"model": "x", "messages": [', 400, None),
    ("not-json", CHAT, b"hello", 400, None),
    ("json-array", CHAT, b"[]", 400, None),
    ("json-null", CHAT, b"null", 400, None),
    ("json-string", CHAT, b'"hi"', 400, None),
    ("empty-body", CHAT, b"", 400, None),
    ("messages-string", CHAT, chat(messages="hi"), 400, "messages"),
    ("messages-empty", CHAT, chat(messages=[]), 400, "messages"),
    ("message-no-role", CHAT, chat(messages=[{"content": "hi"}]), 400, "messages.0.role"),
    ("message-bad-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400, None),
    ("content-number", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, None),
    ("max-tokens-string", CHAT, chat(max_tokens="ten"), 400, "max_tokens"),
    ("max-tokens-negative", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max-tokens-huge", CHAT, chat(max_tokens=10**30), 400, "max_tokens"),
    ("max-tokens-float", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("temperature-string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("temperature-nan", CHAT, chat(temperature=float("nan")), 400, "temperature"),
    ("stream-list", CHAT, chat(stream=[]), 400, "stream"),
    ("repetition-penalty-tiny", CHAT, chat(repetition_penalty=1e-100), 400, "repetition_penalty"),
    ("n-over-worker-limit", CHAT, chat(n=WORKER_LIMIT + 1), 400, "n"),
    ("n-huge", CHAT, chat(n=10**6), 400, "n"),
    ("stop-empty-string", CHAT, chat(stop=[""]), 400, "stop"),
    ("model-missing", CHAT, b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
    ("model-empty", CHAT, chat(model=""), 400, "model"),
    ("model-object", CHAT, chat(model={"a": 1}), 400, "model"),
    ("lone-high-surrogate", CHAT, raw_chat('"\\ud800 hi"'), 400, "messages.0.content"),
    ("lone-low-surrogate", CHAT, raw_chat('"x\\udfff"'), 400, "messages.0.content"),
    (
        "surrogate-in-part",
        CHAT,
        raw_chat('[{"type": "text", "text": "\\ud83d"}]'),
        400,
        "messages.0.content.0.text",
    ),
    ("image-part", CHAT, raw_chat('[{"type": "image_url", "image_url": "x"}]'), 400, None),
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
        b'{"model": "%s", "prompt": "\\udc00", "max_tokens": 2}' % MODEL.encode(),
        400,
        "prompt",
    ),
    (
        "prompt-empty-list",
        COMPLETIONS,
        json.dumps({"model": MODEL, "prompt": []}).encode(),
        400,
        None,
    ),
    (
        "prompt-empty-ids",
        COMPLETIONS,
        json.dumps({"model": MODEL, "prompt": [[]]}).encode(),
        400,
        None,
    ),
    (
        "prompt-bad-token-id",
        COMPLETIONS,
        json.dumps({"model": MODEL, "prompt": [1, -5]}).encode(),
        400,
        "prompt",
    ),
    (
        "prompt-token-id-huge",
        COMPLETIONS,
        json.dumps({"model": MODEL, "prompt": [10**12]}).encode(),
        400,
        "prompt",
    ),
    ("unknown-model", CHAT, chat(model="no-such-model"), 404, "model"),
]


@pytest.fixture(params=["worker", "gateway"])
def target(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """Base URL and headers of the worker itself, or of the gateway in front of it."""
    if request.param == "worker":
        served: Served = request.getfixturevalue("real_worker")
        return served.url, {}
    served = request.getfixturevalue("keyed_gateway")
    return served.url, AUTH


def assert_openai_error(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["message"]
    assert body["error"]["type"] == (
        "not_found_error" if status == 404 else "invalid_request_error"
    )
    if param is not None:
        assert (body["error"]["param"] or "").startswith(param), body


@pytest.mark.parametrize(
    ("path", "body", "status", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_is_a_4xx_openai_error(target, path, body, status, param) -> None:
    url, headers = target
    r = httpx.post(
        url + path,
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=60,
    )
    assert_openai_error(r, status, param)


@pytest.mark.parametrize(
    "text",
    ["🏔️ K2? 👩‍👩‍👧", "שלום, מה שלומך?", "مرحبا", "a\u0000b", "e\u0301\u200d\ufeff", "😀" * 40],
    ids=["emoji", "hebrew-rtl", "arabic-rtl", "nul", "combining-zwj-bom", "many-emoji"],
)
def test_unusual_but_valid_text_is_served(target, text: str) -> None:
    url, headers = target
    r = httpx.post(
        url + CHAT,
        json={"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 1e-300},
        {"temperature": 2.0, "top_p": 1e-300},
        {"temperature": 2.0, "repetition_penalty": 0.01, "top_k": 1},
        {"temperature": 2.0, "repetition_penalty": 10.0},
        {"presence_penalty": -2.0, "frequency_penalty": 2.0, "seed": 2**63 - 1},
    ],
    ids=["tiny-temperature", "tiny-top-p", "small-penalty", "big-penalty", "edge-penalties"],
)
def test_extreme_but_valid_sampling_is_served(target, params: dict) -> None:
    """Parameters at the edges of their ranges sample a token (no inf/nan inside, no 500)."""
    url, headers = target
    r = httpx.post(url + CHAT, json=json.loads(chat(max_tokens=8, **params)), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_json_without_content_type_is_a_400_that_says_so(target) -> None:
    url, headers = target
    r = httpx.post(url + CHAT, content=chat(), headers=headers)  # no Content-Type
    assert_openai_error(r, 400, None)
    assert "Content-Type: application/json" in r.json()["error"]["message"]


def test_oversized_body_is_413_at_the_gateways_limit(keyed_gateway: Served) -> None:
    big = chat(messages=[{"role": "user", "content": "x" * GATEWAY_BODY_LIMIT}])
    r = httpx.post(
        keyed_gateway.url + CHAT, content=big, headers={"content-type": "application/json", **AUTH}
    )
    assert_openai_error(r, 413, None)
    assert str(GATEWAY_BODY_LIMIT) in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    r = httpx.post(
        keyed_gateway.url + CHAT,
        content=chunks(),
        headers={"content-type": "application/json", **AUTH},
    )
    assert_openai_error(r, 413, None)
    # just under the limit is parsed and served
    ok = chat(messages=[{"role": "user", "content": "hi " * 100}])
    r = httpx.post(
        keyed_gateway.url + CHAT,
        content=ok,
        headers={"content-type": "application/json", **AUTH},
        timeout=60,
    )
    assert r.status_code == 200, r.text


def test_oversized_body_is_413_at_the_worker(real_worker: Served) -> None:
    big = chat(messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])
    r = httpx.post(
        real_worker.url + CHAT, content=big, headers={"content-type": "application/json"}
    )
    assert_openai_error(r, 413, None)


def test_bad_stream_request_fails_before_streaming(target) -> None:
    """A bad streamed request is a plain JSON error, not an event stream with an error in it."""
    url, headers = target
    r = httpx.post(url + CHAT, json=json.loads(chat(stream=True, max_tokens=-3)), headers=headers)
    assert_openai_error(r, 400, "max_tokens")
