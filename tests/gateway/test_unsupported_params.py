"""OpenAI parameters kubechat does not implement are refused, never silently ignored: a 400
whose ``param`` names the field and whose message reads ``<field>: <why>`` without a validation
library's wording. The gateway checks bodies with the same request models as the workers, so
the refusal comes before any worker is asked (the scripted one counts no request)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .harness import gateway

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}
CASES = [
    ("/v1/chat/completions", CHAT, "logit_bias", {"50256": -100}),
    ("/v1/completions", COMPLETION, "logit_bias", {"50256": -100}),
    ("/v1/chat/completions", CHAT, "functions", [{"name": "f", "parameters": {}}]),
    ("/v1/chat/completions", CHAT, "function_call", "auto"),
    ("/v1/chat/completions", CHAT, "audio", {"voice": "alloy", "format": "wav"}),
    ("/v1/chat/completions", CHAT, "modalities", ["text", "audio"]),
    ("/v1/chat/completions", CHAT, "prediction", {"type": "content", "content": "x"}),
    ("/v1/chat/completions", CHAT, "reasoning_effort", "high"),
    ("/v1/chat/completions", CHAT, "web_search_options", {}),
    ("/v1/chat/completions", CHAT, "store", True),
    ("/v1/completions", COMPLETION, "suffix", "tail"),
    ("/v1/completions", COMPLETION, "best_of", 3),
    ("/v1/chat/completions", CHAT, "top_logprobs", 2),
    ("/v1/completions", COMPLETION, "logprobs", 6),
    ("/v1/embeddings", {"model": "m", "input": "x"}, "encoding_format", "int8"),
]


@pytest.mark.parametrize(
    ("path", "body", "field", "value"), CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES]
)
def test_unimplemented_parameter_is_a_400_naming_it(
    tmp_path: Path, path: str, body: dict, field: str, value: object
) -> None:
    with gateway(tmp_path, {"a": "ok"}) as gw:
        r = httpx.post(f"{gw.url}{path}", json={**body, field: value}, timeout=30)
        assert gw.hits("a") == 0
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ")
    assert "Value error" not in error["message"] and "pydantic" not in error["message"]


def test_defaults_of_those_parameters_are_accepted(tmp_path: Path) -> None:
    """What clients send when they mean "nothing" (empty, false, text only) is no refusal."""
    neutral = {"logit_bias": {}, "store": False, "modalities": ["text"], "functions": []}
    with gateway(tmp_path, {"a": "ok"}) as gw:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, **neutral}, timeout=30)
        assert r.status_code == 200, r.text
        assert gw.hits("a") == 1
