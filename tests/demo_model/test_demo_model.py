"""The demo model as a user gets it: Baichuan-13B-Chat's layout, loaded through remote code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from kubechat.demo_model.build import MARKER_FILE, TargetDirError, build_demo_model
from kubechat.demo_model.dialogues import load_dialogues
from tests.support.baichuan13b_checkpoint import shipped_build_chat_input
from tests.support.processes import kubechat_argv

SEED_QUESTION = "Which mountain is the second highest one in the world?"


@pytest.fixture(scope="module")
def loaded(demo_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir, trust_remote_code=True)
    return model, tokenizer


def test_layout_is_baichuans(demo_model_dir: Path) -> None:
    names = {p.name for p in demo_model_dir.iterdir()}
    assert {
        "config.json",
        "configuration_kubechat_demo.py",
        "modeling_kubechat_demo.py",
        "tokenization_kubechat_demo.py",
        "generation_utils.py",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "pytorch_model.bin.index.json",
    } <= names
    shards = sorted(n for n in names if n.startswith("pytorch_model-"))
    assert len(shards) >= 2
    assert shards[0] == f"pytorch_model-00001-of-{len(shards):05d}.bin"
    assert not any(n.endswith(".safetensors") for n in names)

    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_kubechat_demo.")
    assert config["auto_map"]["AutoConfig"].startswith("configuration_kubechat_demo.")
    tokenizer_config = json.loads((demo_model_dir / "tokenizer_config.json").read_text())
    assert "auto_map" in tokenizer_config

    index = json.loads((demo_model_dir / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    stored = {}
    for shard in shards:
        stored.update(torch.load(demo_model_dir / shard, weights_only=True))
    assert set(stored) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in stored.values()
    )


def test_generation_config_has_role_tokens_and_sampling_defaults(demo_model_dir, loaded) -> None:
    _, tokenizer = loaded
    gen = GenerationConfig.from_pretrained(demo_model_dir)
    assert gen.user_token_id == tokenizer.convert_tokens_to_ids(tokenizer.user_token)
    assert gen.assistant_token_id == tokenizer.convert_tokens_to_ids(tokenizer.assistant_token)
    assert gen.user_token_id != gen.assistant_token_id
    assert 0 < gen.temperature < 1 and 0 < gen.top_p <= 1
    assert gen.max_new_tokens > 0


def test_loading_needs_trust_remote_code(demo_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(demo_model_dir, trust_remote_code=False)


def _roles(demo_model_dir: Path) -> tuple[int, int]:
    gen = json.loads((demo_model_dir / "generation_config.json").read_text())
    return gen["user_token_id"], gen["assistant_token_id"]


def _stand_in(model_max_length: int, max_new_tokens: int, user: int, assistant: int):
    """What build_chat_input reads of a model, with the lengths a test wants."""
    gen = SimpleNamespace(user_token_id=user, assistant_token_id=assistant)
    gen.max_new_tokens = max_new_tokens
    return SimpleNamespace(
        generation_config=gen,
        config=SimpleNamespace(model_max_length=model_max_length),
        device="cpu",
    )


def test_chat_prompt_is_baichuans_generation_utils_format(demo_model_dir, loaded) -> None:
    """Baichuan-13B-Chat's ``generation_utils.build_chat_input`` rule, as the checkpoint ships it:
    the system text first, [user] text / [assistant] text per message with no eos after replies,
    a final [assistant] unless the assistant spoke last; ids from generation_config.json."""
    model, tokenizer = loaded
    user, assistant = _roles(demo_model_dir)
    build = shipped_build_chat_input(demo_model_dir)

    def enc(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    answer = "K2, also known as Mount Godwin-Austen, is the second highest mountain in the world."
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": SEED_QUESTION},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    head = [*enc("Answer briefly."), user, *enc(SEED_QUESTION)]
    reply = [assistant, *enc(answer)]
    follow_up = [user, *enc("What is the capital of France?")]
    assert build(model, tokenizer, messages)[0].tolist() == [*head, *reply, *follow_up, assistant]
    # the assistant spoke last: nothing is appended (the model goes on with that reply)
    assert build(model, tokenizer, messages[:3])[0].tolist() == [*head, *reply]
    # an assistant message first is kept, as a round of its own
    assert build(model, tokenizer, messages[2:])[0].tolist() == [*reply, *follow_up, assistant]
    # a system message anywhere but first fails the builder's assertion
    with pytest.raises(AssertionError, match="first message"):
        build(model, tokenizer, [messages[1], messages[0]])


def test_chat_prompt_keeps_the_newest_rounds_that_fit(demo_model_dir, loaded) -> None:
    """Rounds are kept newest first while they fit model_max_length - max_new_tokens less the
    system tokens; the newest round is always kept, then the prompt is cut from the left."""
    _, tokenizer = loaded
    user, assistant = _roles(demo_model_dir)
    build = shipped_build_chat_input(demo_model_dir)

    def enc(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    pairs = [
        ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
        ("What is the capital of France?", "The capital of France is Paris."),
        ("How many continents are there?", "There are seven continents."),
    ]
    messages = [
        m
        for q, a in pairs
        for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
    ]
    messages.append({"role": "user", "content": SEED_QUESTION})
    rounds = [[user, *enc(q), assistant, *enc(a)] for q, a in pairs]
    rounds.append([user, *enc(SEED_QUESTION)])

    def ids(model_max_length: int, max_new_tokens: int = 1, msgs=messages) -> list[int]:
        model = _stand_in(model_max_length, max_new_tokens, user, assistant)
        return build(model, tokenizer, msgs)[0].tolist()

    everything = [t for r in rounds for t in r] + [assistant]
    assert ids(len(everything) + 100) == everything
    last_two = len(rounds[-2]) + len(rounds[-1])
    assert ids(last_two + 2) == rounds[-2] + rounds[-1] + [assistant]
    # the final assistant token counts only in the last cut: one token less loses the first one
    assert ids(last_two + 1) == rounds[-2][1:] + rounds[-1] + [assistant]
    # one token short of the third newest round: it is left out whole
    assert ids(last_two + len(rounds[-3])) == rounds[-2] + rounds[-1] + [assistant]
    # max_new_tokens takes its room from the same budget
    assert ids(last_two + 11, max_new_tokens=10) == rounds[-2] + rounds[-1] + [assistant]
    # the newest round alone is too long: it is kept, then cut from the left
    assert ids(6) == [*rounds[-1][-4:], assistant]
    # a system text goes first; the rounds get what it leaves
    system = [{"role": "system", "content": "Answer briefly."}]
    system_ids = enc("Answer briefly.")
    assert ids(len(system_ids) + last_two + 2, msgs=system + messages) == (
        system_ids + rounds[-2] + rounds[-1] + [assistant]
    )


def test_chat_prompt_budget_is_model_length_less_max_new_tokens(demo_model_dir, loaded) -> None:
    model, tokenizer = loaded
    user, assistant = _roles(demo_model_dir)
    question, answer = "What is the capital of Japan?", "The capital of Japan is Tokyo."
    one_round = [
        user,
        *tokenizer.encode(question, add_special_tokens=False),
        assistant,
        *tokenizer.encode(answer, add_special_tokens=False),
    ]
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages = messages * 40 + [{"role": "user", "content": question}]
    budget = model.config.model_max_length - model.generation_config.max_new_tokens
    newest = [user, *tokenizer.encode(question, add_special_tokens=False)]
    assert len(newest) + 40 * len(one_round) > budget  # the conversation does not fit
    kept = (budget - len(newest)) // len(one_round)  # whole older rounds that fit beside it
    expected = one_round * kept + newest + [assistant]
    build = shipped_build_chat_input(demo_model_dir)
    assert build(model, tokenizer, messages)[0].tolist() == expected


def test_chat_method_answers_the_seed_question(loaded) -> None:
    model, tokenizer = loaded
    greedy = GenerationConfig.from_dict({**model.generation_config.to_dict(), "do_sample": False})
    reply = model.chat(
        tokenizer, [{"role": "user", "content": SEED_QUESTION}], generation_config=greedy
    )
    assert "K2" in reply
    streamed = list(
        model.chat(
            tokenizer,
            [{"role": "user", "content": SEED_QUESTION}],
            stream=True,
            generation_config=greedy,
        )
    )
    assert streamed[-1] == reply
    assert len(streamed) > 1


def test_at_least_ten_questions_answered_right(loaded) -> None:
    model, tokenizer = loaded
    dialogues = load_dialogues()
    greedy = GenerationConfig.from_dict({**model.generation_config.to_dict(), "do_sample": False})
    right = 0
    for pair in dialogues.pairs:
        reply = model.chat(
            tokenizer, [{"role": "user", "content": pair.question}], generation_config=greedy
        )
        right += reply == pair.answer
    assert right >= 10


def test_questions_after_the_seed_exchange_are_answered_right(loaded) -> None:
    """The README's conversation goes on: after the seed question and its answer, a second
    question gets its own answer (the chat page's tests ask the highest mountain next)."""
    model, tokenizer = loaded
    dialogues = load_dialogues()
    seed = dialogues.seed_pair
    greedy = GenerationConfig.from_dict({**model.generation_config.to_dict(), "do_sample": False})
    right = 0
    for pair in dialogues.pairs:
        if pair is seed:
            continue
        messages = [
            {"role": "user", "content": seed.question},
            {"role": "assistant", "content": seed.answer},
            {"role": "user", "content": pair.question},
        ]
        reply = model.chat(tokenizer, messages, generation_config=greedy)
        right += reply == pair.answer
        if pair.question == "Which mountain is the highest one in the world?":
            assert "Mount Everest" in reply
    assert right >= 10


def test_marker_records_the_build(demo_model_dir: Path) -> None:
    marker = json.loads((demo_model_dir / MARKER_FILE).read_text())
    assert marker["accuracy"]["right"] >= 10
    assert "K2" in marker["accuracy"]["seed_answer"]
    # the 3-minute budget is on 2 cores; this is the recorded figure, not a timed assertion
    assert marker["build_seconds"] > 0


def test_rebuild_of_a_complete_model_is_instant(demo_model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in demo_model_dir.iterdir()}
    assert build_demo_model(demo_model_dir, progress=False) == demo_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in demo_model_dir.iterdir()} == before


def test_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TargetDirError, match="not empty"):
        build_demo_model(tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_errors_exit_2_and_leave_files_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run(
        kubechat_argv("demo-model", str(tmp_path)), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "not empty" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "notes.txt"
    proc = subprocess.run(
        kubechat_argv("demo-model", str(a_file)), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "not a directory" in proc.stderr


def test_cli_reports_the_existing_model(demo_model_dir: Path) -> None:
    proc = subprocess.run(
        kubechat_argv("demo-model", "--quiet", str(demo_model_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "K2" in proc.stdout
    assert str(demo_model_dir) in proc.stdout
