"""Remote-code checkpoints that ship their own chat-input builder: the worker's prompt ids are that
builder's, for every conversation shape, compared with the function taken from the checkpoint's
folder (not with a rule written in this test).

Checkpoints: the demo model, and tiny random Baichuan-13B-layout checkpoints in two revisions,
``generation_utils`` (``model.chat()`` calls ``generation_utils.build_chat_input``; the model
still has the first release's ``_build_chat_input``, which must not be used) and
``first_release`` (``model.chat()`` calls ``_build_chat_input``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kubechat.worker.loading import LoadOptions, load_model
from kubechat.worker.templates import resolve_template
from tests.support.baichuan13b_checkpoint import (
    build_baichuan13b_checkpoint,
    shipped_build_chat_input,
)
from tests.worker.conftest import SEED_QUESTION, Worker

SEED_ANSWER = "K2, also known as Mount Godwin-Austen, is the second highest mountain in the world."
SYSTEM = {"role": "system", "content": "Answer briefly."}
ASK_SEED = {"role": "user", "content": SEED_QUESTION}
SEED_REPLY = {"role": "assistant", "content": SEED_ANSWER}
ASK_HIGHEST = {"role": "user", "content": "Which mountain is the highest one in the world?"}
ASK_FRANCE = {"role": "user", "content": "What is the capital of France?"}
CONVERSATIONS = {
    "one question": [ASK_SEED],
    "system first": [SYSTEM, ASK_SEED],
    "multi-turn": [ASK_SEED, SEED_REPLY, ASK_HIGHEST],
    "system first, three turns": [
        SYSTEM,
        ASK_SEED,
        SEED_REPLY,
        ASK_HIGHEST,
        {"role": "assistant", "content": "Mount Everest."},
        ASK_FRANCE,
    ],
    "assistant spoke last": [ASK_SEED, SEED_REPLY],
    "assistant first": [SEED_REPLY, ASK_HIGHEST],
    "two user messages in a row": [ASK_SEED, ASK_HIGHEST],
    "system not first": [ASK_SEED, SYSTEM],
}


@pytest.fixture(scope="module", params=["demo model", "generation_utils", "first_release"])
def checkpoint(request, demo_model_dir: Path, baichuan13b_dir: Path, tmp_path_factory):
    """(folder, loaded model) of each checkpoint, loaded the way the worker loads it."""
    folder = {"demo model": demo_model_dir, "generation_utils": baichuan13b_dir}.get(request.param)
    if folder is None:
        # its own folder name: transformers keys remote classes by module, not by folder
        folder = tmp_path_factory.mktemp("first-release") / "Baichuan-13B-Chat-first-release"
        folder = build_baichuan13b_checkpoint(folder, revision=request.param)
    return request.param, folder, load_model(LoadOptions(str(folder), trust_remote_code=True))


def shipped_builder(name: str, folder: Path, loaded):
    """The builder ``model.chat()`` of this checkpoint uses, called as ``chat()`` calls it."""
    if name == "first_release":
        return lambda messages: loaded.model._build_chat_input(loaded.tokenizer, messages)
    build = shipped_build_chat_input(folder)
    return lambda messages: build(loaded.model, loaded.tokenizer, messages)


@pytest.mark.parametrize("shape", list(CONVERSATIONS))
def test_worker_prompt_is_the_checkpoints_own(checkpoint, shape: str) -> None:
    name, folder, loaded = checkpoint
    messages = CONVERSATIONS[shape]
    template = resolve_template(None, loaded.tokenizer, loaded.generation_config, loaded.model)
    assert template.name == "checkpoint"
    try:
        expected = shipped_builder(name, folder, loaded)(messages)[0].tolist()
    except (AssertionError, ValueError) as refusal:
        with pytest.raises(ValueError) as caught:
            template.encode(messages)
        # the builder's own reason: exception type, file and line of the statement that refused
        assert type(refusal).__name__ in str(caught.value)
        assert str(refusal) in str(caught.value)
        assert ".py, line " in str(caught.value)
        return
    assert template.encode(messages) == expected


def test_the_generation_utils_revision_uses_its_function_not_the_old_method(
    baichuan13b_dir: Path,
) -> None:
    """The revision carries both builders; ``chat()`` calls the function, so must the worker:
    their prompts differ from the second turn on (eos after replies in the old one)."""
    loaded = load_model(LoadOptions(str(baichuan13b_dir), trust_remote_code=True))
    template = resolve_template(None, loaded.tokenizer, loaded.generation_config, loaded.model)
    messages = CONVERSATIONS["multi-turn"]
    old_rule = loaded.model._build_chat_input(loaded.tokenizer, messages)[0].tolist()
    new_rule = shipped_build_chat_input(baichuan13b_dir)(loaded.model, loaded.tokenizer, messages)
    assert old_rule != new_rule[0].tolist()
    assert template.encode(messages) == new_rule[0].tolist()
    assert "generation_utils.build_chat_input" in repr(template)


def test_the_builtin_baichuan_template_agrees_with_the_shipped_function(baichuan13b_dir) -> None:
    """``--conv-template baichuan`` (no builder at hand) builds the same ids as Baichuan's
    published ``generation_utils.build_chat_input`` for every conversation it accepts."""
    loaded = load_model(LoadOptions(str(baichuan13b_dir), trust_remote_code=True))
    template = resolve_template("baichuan", loaded.tokenizer, loaded.generation_config)
    build = shipped_build_chat_input(baichuan13b_dir)
    for shape, messages in CONVERSATIONS.items():
        if shape == "system not first":
            with pytest.raises(ValueError, match="only as the first message"):
                template.encode(messages)
            continue
        expected = build(loaded.model, loaded.tokenizer, messages)[0].tolist()
        assert template.encode(messages) == expected, shape


def test_no_round_is_dropped_to_fit_the_context(checkpoint) -> None:
    """Context-length policy (README): the builder drops the oldest rounds to leave
    ``max_new_tokens`` of room; the worker keeps the whole conversation (and the API answers 400
    when it does not fit). With room for everything, the builder agrees with the worker."""
    name, folder, loaded = checkpoint
    template = resolve_template(None, loaded.tokenizer, loaded.generation_config, loaded.model)
    config = loaded.model.config
    room = config.model_max_length - loaded.model.generation_config.max_new_tokens
    exchange = len(template.encode([ASK_SEED, SEED_REPLY]))
    rounds = [ASK_SEED, SEED_REPLY] * (room // exchange + 2) + [ASK_HIGHEST]
    builder = shipped_builder(name, folder, loaded)
    shortened = builder(rounds)[0].tolist()
    everything = template.encode(rounds)
    assert len(shortened) <= room + 1 < len(everything)  # + 1: the old rule's assistant token
    assert everything[-len(shortened) :] == shortened  # the newest rounds, as the builder kept
    length = config.model_max_length
    config.model_max_length = 10 * len(everything)
    try:
        assert builder(rounds)[0].tolist() == everything
    finally:
        config.model_max_length = length


def test_a_system_message_not_first_is_400_with_the_builders_reason(worker: Worker) -> None:
    """The demo model's builder asserts that a system message comes first: OpenAI error JSON,
    naming the builder's file, line and statement."""
    body = {"model": worker.model, "messages": [ASK_SEED, SYSTEM], "max_tokens": 8}
    r = httpx.post(f"{worker.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "generation_utils.build_chat_input refused them: AssertionError" in error["message"]
    assert "generation_utils.py, line " in error["message"] and "assert " in error["message"]


def test_the_follow_up_after_the_seed_exchange_is_answered(worker: Worker) -> None:
    """The README's conversation through the worker (prompt from the demo model's builder)."""
    reply = worker.client.chat.completions.create(
        model=worker.model,
        messages=[ASK_SEED, SEED_REPLY, ASK_HIGHEST],
        temperature=0,
        max_tokens=40,
    )
    assert "Mount Everest" in reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 20  # the whole exchange went in
