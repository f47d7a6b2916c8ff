"""lm-evaluation-harness (``lm_eval`` from PyPI) scores a multiple-choice task against the
gateway with its ``local-completions`` model (echo, logprobs, one token), from a local task YAML
and a local jsonl dataset; each choice's log-likelihood equals a direct transformers forward pass
on the same checkpoint. Also the completions and chat logprobs shapes, streamed and not."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.served_model import ServedModel, served_model
from tests.support.tool_checkpoint import build_tool_checkpoint

lm_eval = pytest.importorskip("lm_eval", reason="installed by .ci/install-test-tools.sh")

NAME = "tiny-qwen"
TOLERANCE = 1e-4
QUESTIONS = [
    {"question": "def add(a, b):", "choices": ["return a + b", "pass", "import os"], "answer": 0},
    {"question": "for i in", "choices": ["range(10):", "True", "self"], "answer": 0},
    {"question": "class Foo", "choices": ["(object):", ":", " = 3"], "answer": 1},
    {"question": "if x is", "choices": ["None:", "not None:", "1"], "answer": 0},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tool_checkpoint(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def served(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    with served_model(checkpoint, NAME, tmp_path_factory.mktemp("served")) as s:
        yield s


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def loglikelihood(model, context: list[int], continuation: list[int]) -> float:
    """log P(continuation | context) from one forward pass."""
    tokens = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = model(tokens).logits[0].float().log_softmax(-1)
    return sum(float(logprobs[len(context) + i - 1, t]) for i, t in enumerate(continuation))


def test_lm_eval_multiple_choice_equals_a_forward_pass(
    served: ServedModel, checkpoint: Path, model, tmp_path: Path
) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "kc_mc.yaml").write_text(
        "task: kc_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    results = simple_evaluate(
        model="local-completions",
        model_args={
            "base_url": f"{served.gateway_url}/v1/completions",
            "model": NAME,
            "tokenizer": str(checkpoint),
            "tokenizer_backend": "huggingface",
            "num_concurrent": 2,
            "max_retries": 1,
        },
        tasks=["kc_mc"],
        task_manager=TaskManager(include_path=str(tasks)),
        log_samples=True,
    )
    samples = results["samples"]["kc_mc"]
    assert len(samples) == len(QUESTIONS)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    compared = 0
    for sample in samples:
        for (context, continuation), response in zip(
            sample["arguments"], sample["resps"], strict=True
        ):
            # lm-eval's own split: the continuation's tokens are what the whole adds
            whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            expected = loglikelihood(model, ctx, whole[len(ctx) :])
            got = response[0][0]
            assert math.isfinite(got)
            assert got == pytest.approx(expected, abs=TOLERANCE), (context, continuation)
            compared += 1
    assert compared == sum(len(q["choices"]) for q in QUESTIONS)
    assert 0.0 <= results["results"]["kc_mc"]["acc,none"] <= 1.0


def _post(served: ServedModel, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{served.gateway_url}{path}", json=body, timeout=120)


def test_completions_logprobs_columns(served: ServedModel, checkpoint: Path, model) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt = tokenizer("import sys\nprint(sys.argv)", add_special_tokens=False)["input_ids"]
    body = {"model": NAME, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
    r = _post(served, "/v1/completions", body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == tokenizer.decode(prompt)
    assert len(lp["tokens"]) == len(prompt) and lp["token_logprobs"][0] is None
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"][:3] == [
        0,
        len(lp["tokens"][0]),
        len(lp["tokens"][0] + lp["tokens"][1]),
    ]
    with torch.no_grad():
        table = model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
    for t in range(1, len(prompt)):
        assert lp["token_logprobs"][t] == pytest.approx(float(table[t - 1, prompt[t]]), abs=1e-4)
        top = lp["top_logprobs"][t]
        assert 2 <= len(top) <= 3  # the two most likely, and the prompt's own token
        assert max(top.values()) == pytest.approx(float(table[t - 1].max()), abs=1e-4)

    # generated tokens, streamed: one token per chunk, each with its logprob
    stream = {"model": NAME, "prompt": "x = ", "max_tokens": 5, "temperature": 0,
              "logprobs": 1, "stream": True, "ignore_eos": True}  # fmt: skip
    with httpx.stream("POST", f"{served.gateway_url}/v1/completions", json=stream) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    tokens = [
        t
        for c in chunks
        if c["choices"][0]["logprobs"]
        for t in c["choices"][0]["logprobs"]["tokens"]
    ]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert len(tokens) == 5 and "".join(tokens) == text


def test_chat_logprobs_streamed_and_not(served: ServedModel) -> None:
    client = served.client()
    messages = [{"role": "user", "content": "Say something"}]
    common = {"model": NAME, "messages": messages, "max_tokens": 6, "temperature": 0}
    whole = client.chat.completions.create(**common, logprobs=True, top_logprobs=3)
    content = whole.choices[0].logprobs.content
    assert 1 <= len(content) <= 6
    assert "".join(e.token for e in content) == whole.choices[0].message.content
    for entry in content:
        assert bytes(entry.bytes).decode("utf-8", "replace") is not None
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy
    streamed = client.chat.completions.create(**common, logprobs=True, top_logprobs=3, stream=True)
    entries = [
        e
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in entries] == [
        (e.token, round(e.logprob, 4)) for e in content
    ]
    r = _post(served, "/v1/chat/completions", {**common, "top_logprobs": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
