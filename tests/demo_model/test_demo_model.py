"""The demo model as a user gets it: Baichuan-13B-Chat's layout, loaded through remote code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from kubechat.demo_model.build import MARKER_FILE, TargetDirError, build_demo_model
from kubechat.demo_model.dialogues import load_dialogues
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
