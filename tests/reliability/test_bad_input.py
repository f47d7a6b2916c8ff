"""Bad input, sent to the worker and through the gateway: always a 4xx OpenAI error, never a 5xx.

The cases (benchmarks/bad_input.py, shared with benchmarks/faults.py) are raw bytes on the wire,
so JSON escapes such as lone surrogates arrive exactly as a hostile client would send them;
valid but unusual text (emoji, right-to-left, NUL) is served.
"""

from __future__ import annotations

import json

import httpx
import pytest

from benchmarks import bad_input
from benchmarks.bad_input import CHAT

from .conftest import AUTH, GATEWAY_BODY_LIMIT, MODEL, WORKER_LIMIT, Served

pytestmark = pytest.mark.slow

CASES = bad_input.cases(MODEL, WORKER_LIMIT)


def chat(**fields) -> bytes:
    return bad_input.chat(MODEL, **fields)


@pytest.fixture(params=["worker", "gateway"])
def target(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """Base URL and headers of the worker itself, or of the gateway in front of it."""
    if request.param == "worker":
        served: Served = request.getfixturevalue("real_worker")
        return served.url, {}
    served = request.getfixturevalue("keyed_gateway")
    return served.url, AUTH


def assert_openai_error(r: httpx.Response, status: int, param: str | None) -> None:
    wrong = bad_input.problem(r, status, param)
    assert wrong is None, wrong


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
