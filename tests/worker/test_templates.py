"""Chat templates: each built-in's prompt ids, and which template a model gets."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from kubechat.worker.templates import (
    FALLBACK_TEMPLATE,
    VICUNA_SYSTEM,
    available_templates,
    resolve_template,
)
from tests.support.baichuan13b_checkpoint import REMOTE_CODE as BAICHUAN13B_REMOTE_CODE
from tests.support.baichuan13b_checkpoint import shipped_build_chat_input
from tests.support.processes import kubechat_argv

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Which mountain is the second highest one in the world?",
    "K2 is the second highest mountain in the world, after Everest.",
    "You are a helpful assistant. Answer briefly.",
    "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>> system user assistant",
]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Which mountain is the second highest?"},
    {"role": "assistant", "content": "K2."},
    {"role": "user", "content": "And the highest?"},
]
BAICHUAN_ROLES = {"user_token_id": 195, "assistant_token_id": 196, "eos_token_id": 2}


def build_tokenizer(*, chatml_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with Llama's <s>/</s> that adds <s> in front by default."""
    specials = SPECIAL_TOKENS if chatml_tokens else SPECIAL_TOKENS[:3]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 5, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def plain(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def baichuans_build_chat_input(tokenizer, messages) -> list[int]:
    """The ids Baichuan-13B-Chat's published ``generation_utils.build_chat_input`` gives, taken
    from the test checkpoint's copy of that file's semantics, for a model with BAICHUAN_ROLES."""
    model = SimpleNamespace(
        generation_config=SimpleNamespace(
            user_token_id=195, assistant_token_id=196, max_new_tokens=2048
        ),
        config=SimpleNamespace(model_max_length=4096),
        device="cpu",
    )
    return shipped_build_chat_input(BAICHUAN13B_REMOTE_CODE)(model, tokenizer, messages)[0].tolist()


@pytest.mark.parametrize(
    "messages",
    [
        CHAT,
        CHAT[1:],
        CHAT[1:3],  # the assistant spoke last: nothing is appended
        CHAT[2:],  # opens with the assistant: kept
        [{"role": "user", "content": "K2"}, {"role": "user", "content": "Everest"}],
    ],
)
def test_baichuan_builds_what_baichuans_generation_utils_builds(tokenizer, messages):
    """Also with this tokenizer, which adds <s> to every encode() as Baichuan's code calls it."""
    template = resolve_template("baichuan", tokenizer, BAICHUAN_ROLES)
    assert template.encode(messages) == baichuans_build_chat_input(tokenizer, messages)


def test_baichuan_closes_no_reply_with_eos_and_stops_at_a_new_user_turn(tokenizer):
    template = resolve_template("baichuan", tokenizer, BAICHUAN_ROLES)
    ids = template.encode(CHAT)
    assert 2 not in ids and ids[-1] == 196
    assert template.encode(CHAT[1:3])[-1] != 196
    assert {2, 195} <= template.stop_token_ids


def test_baichuan_takes_a_system_message_only_first(tokenizer):
    template = resolve_template("baichuan", tokenizer, BAICHUAN_ROLES)
    late = [*CHAT, {"role": "system", "content": "Answer in English."}]
    with pytest.raises(AssertionError):
        baichuans_build_chat_input(tokenizer, late)
    with pytest.raises(ValueError, match="only as the first message"):
        template.encode(late)
    with pytest.raises(ValueError, match="only as the first message"):  # developer is system
        template.encode([*CHAT, {"role": "developer", "content": "Answer in English."}])


def test_baichuan_needs_role_ids_in_generation_config(tokenizer):
    with pytest.raises(ValueError, match="user_token_id"):
        resolve_template("baichuan", tokenizer, {"eos_token_id": 2})


def test_llama_2_wraps_each_exchange_in_bos_and_eos(tokenizer):
    template = resolve_template("llama-2", tokenizer, None)
    text = (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhich mountain is the second highest? [/INST]"
        " K2. </s><s>[INST] And the highest? [/INST]"
    )
    ids = template.encode(CHAT)
    assert ids == plain(tokenizer, text)  # <s> and </s> in the text parse as special tokens
    assert tokenizer.decode(ids) == text
    assert ids.count(tokenizer.bos_token_id) == 2 and ids.count(tokenizer.eos_token_id) == 1
    assert "</s>" in template.stop_strings


def test_vicuna_v1_1_format(tokenizer):
    template = resolve_template("vicuna", tokenizer, None)
    ids = template.encode(CHAT)
    text = (
        "Be brief. USER: Which mountain is the second highest? ASSISTANT: K2.</s>"
        "USER: And the highest? ASSISTANT:"
    )
    assert tokenizer.decode(ids) == "<s>" + text
    assert ids[0] == tokenizer.bos_token_id
    assert "</s>" in template.stop_strings
    assert tokenizer.eos_token_id in template.stop_token_ids


def test_vicuna_default_system_line(tokenizer):
    template = resolve_template("vicuna", tokenizer, None)
    ids = template.encode([{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(ids) == f"<s>{VICUNA_SYSTEM} USER: Hi ASSISTANT:"


def test_chatml_format_and_stop(tokenizer):
    template = resolve_template("chatml", tokenizer, None)
    ids = template.encode(CHAT)
    text = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhich mountain is the second highest?<|im_end|>\n"
        "<|im_start|>assistant\nK2.<|im_end|>\n"
        "<|im_start|>user\nAnd the highest?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.decode(ids) == text
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids.count(im_start) == 5 and ids.count(im_end) == 4
    assert template.stop_strings == ["<|im_end|>"]
    assert im_end in template.stop_token_ids


def test_raw_joins_contents(tokenizer):
    template = resolve_template("raw", tokenizer, None)
    ids = template.encode([{"role": "user", "content": "Which mountain"}])
    assert ids == tokenizer.encode("Which mountain")


def test_list_of_parts_content_and_developer_role(tokenizer):
    template = resolve_template("chatml", tokenizer, None)
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Which mountain "},
                {"type": "text", "text": "is the second highest?"},
            ],
        },
    ]
    same = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which mountain is the second highest?"},
    ]
    assert template.encode(parts) == template.encode(same)
    with pytest.raises(ValueError, match="image_url"):
        template.encode([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


def test_unknown_template_name_lists_the_choices(tokenizer):
    with pytest.raises(ValueError) as caught:
        resolve_template("alpaca-9000", tokenizer, None)
    for name in ("baichuan", "llama-2", "vicuna", "chatml", "raw", "vicuna_v1.1", "baichuan-chat"):
        assert name in str(caught.value)
    for name in ("baichuan", "llama-2", "vicuna", "chatml", "raw"):
        assert name in available_templates()


@pytest.mark.parametrize(
    ("fastchat_name", "ours", "roles"),
    [
        ("vicuna_v1.1", "vicuna", None),
        ("baichuan-chat", "baichuan", BAICHUAN_ROLES),
        ("llama-2", "llama-2", None),
        ("raw", "raw", None),
    ],
)
def test_fastchat_template_names_are_accepted(tokenizer, fastchat_name, ours, roles):
    """FastChat's conversation.py names for the same formats give the same prompts."""
    template = resolve_template(fastchat_name, tokenizer, roles)
    assert template.name == ours
    assert template.encode(CHAT) == resolve_template(ours, tokenizer, roles).encode(CHAT)


def test_cli_refuses_an_unknown_template_at_startup(tmp_path):
    """Exit code 2 and the accepted names, before any model is looked for."""
    argv = kubechat_argv(
        "worker", "--model-path", str(tmp_path / "no-model"), "--conv-template", "alpaca-9000"
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "unknown chat template 'alpaca-9000'" in proc.stderr
    assert "vicuna_v1.1" in proc.stderr and "chatml" in proc.stderr


def test_tokenizer_chat_template_is_used_when_present():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    template = resolve_template(None, tokenizer, BAICHUAN_ROLES)
    messages = [{"role": "user", "content": "Which mountain?"}]
    assert template.encode(messages) == plain(tokenizer, "<user>Which mountain?<assistant>")
    assert template.name not in available_templates()
    # the override beats the tokenizer's own template
    assert resolve_template("vicuna", tokenizer, BAICHUAN_ROLES).name == "vicuna"


def test_family_guess_and_fallback():
    tokenizer = build_tokenizer(chatml_tokens=False)
    assert resolve_template(None, tokenizer, BAICHUAN_ROLES).name == "baichuan"
    assert resolve_template(None, tokenizer, None).name == FALLBACK_TEMPLATE
    assert resolve_template(None, build_tokenizer(), None).name == "chatml"
    tokenizer.name_or_path = "meta-llama/Llama-2-7b-chat-hf"
    assert resolve_template(None, tokenizer, None).name == "llama-2"


def test_a_tokenizer_template_that_refuses_the_messages_raises_value_error():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation must start with the user') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    template = resolve_template(None, tokenizer, None)
    with pytest.raises(ValueError, match="must start with the user"):
        template.encode([{"role": "assistant", "content": "K2."}])
