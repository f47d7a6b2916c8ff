"""A model that fails inside its forward: 500 with a message, and the worker keeps serving.

The checkpoint's own remote code raises for prompts over a length, the way a real model runs out
of memory on a long prompt. Nothing of ours is replaced: the real worker loads and runs it.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import LlamaForCausalLM

from tests.support.processes import free_port, kubechat_argv, running

from .test_loading import tiny_config, write_tokenizer_and_generation_config
from .test_templates import build_tokenizer

FAILS_FROM = 24  # prompt tokens at which the checkpoint's forward raises
MESSAGE = "simulated out of memory in the checkpoint's forward"


@pytest.fixture(scope="module")
def failing_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-failing")
    (directory / "modeling_failing.py").write_text(
        textwrap.dedent(
            f"""
            from transformers import LlamaForCausalLM

            class FailingForCausalLM(LlamaForCausalLM):
                def forward(self, input_ids=None, **kwargs):
                    if input_ids is not None and input_ids.shape[-1] >= {FAILS_FROM}:
                        raise RuntimeError({MESSAGE!r})
                    return super().forward(input_ids=input_ids, **kwargs)
            """
        )
    )
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(build_tokenizer()))).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(
        architectures=["FailingForCausalLM"],
        auto_map={"AutoModelForCausalLM": "modeling_failing.FailingForCausalLM"},
    )
    (directory / "config.json").write_text(json.dumps(config))
    write_tokenizer_and_generation_config(directory)
    return directory


@pytest.fixture(scope="module")
def url(failing_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    argv = kubechat_argv(
        "worker",
        "--model-path",
        str(failing_checkpoint),
        "--model-names",
        "failing",
        "--trust-remote-code",
        "--conv-template",
        "chatml",
        "--port",
        str(port),
    )
    base = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("failing-worker") / "worker.log"
    with running(argv, ready_url=f"{base}/health/ready", log_path=log):
        yield base


def completion(url: str, prompt: str, **extra) -> httpx.Response:
    body = {"model": "failing", "prompt": prompt, "max_tokens": 4, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


LONG = " ".join(["word"] * (FAILS_FROM * 2))


def test_internal_failure_is_500_with_a_message(url: str) -> None:
    r = completion(url, LONG)
    assert r.status_code == 500
    error = r.json()["error"]
    assert MESSAGE in error["message"]
    assert error["type"]


def test_streamed_internal_failure_ends_with_an_error_event(url: str) -> None:
    with httpx.stream(
        "POST",
        f"{url}/v1/completions",
        json={"model": "failing", "prompt": LONG, "max_tokens": 4, "stream": True},
        timeout=60,
    ) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert MESSAGE in error["message"]


def test_worker_keeps_serving_after_a_failure(url: str) -> None:
    assert completion(url, LONG).status_code == 500
    ok = completion(url, "hi")
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["completion_tokens"] >= 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'status="500"' in metrics
    in_flight = [
        line for line in metrics.splitlines() if line.startswith("kubechat_worker_in_flight ")
    ]
    assert in_flight == ["kubechat_worker_in_flight 0.0"]
