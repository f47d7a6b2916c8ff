"""Streamed text: token by token, the deltas add up to the decoded text and never split a
character, whichever way the tokenizer decodes (its Rust backend directly or its Python wrapper)."""

from __future__ import annotations

import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

from kubechat.worker.text_stream import IncrementalDecoder

CORPUS = [
    "def stream(tokens): return ''.join(tokens)",
    "The highest mountain in the world is Mount Everest.",
    "naïve café, 日本語のテキスト, emoji 🙂🚀 and more",
] * 20
TEXTS = [
    "The mountain is high.\n  def f(x): return x",
    "日本語 and 🙂🚀 mixed with naïve words",  # characters of several bytes, split across tokens
    "Ω≈ç√∫ unseen symbols",
]


class WrappedDecode(PreTrainedTokenizerFast):
    """A fast tokenizer whose decode goes through its own Python override (as a model-specific
    tokenizer class may): the decoder must call that, not the backend."""

    calls = 0

    def _decode(self, *args, **kwargs):
        WrappedDecode.calls += 1
        return super()._decode(*args, **kwargs)


@pytest.fixture(scope="module")
def backend() -> object:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, special_tokens=["<s>", "</s>"])
    return bpe._tokenizer


def streamed(tokenizer: object, ids: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_text_and_never_split_a_character(backend, text: str) -> None:
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    wrapped = WrappedDecode(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    ids = [fast.bos_token_id, *fast.encode(text, add_special_tokens=False), fast.eos_token_id]
    assert len(ids) > len(text.split()) + 2  # several tokens per word: real incremental work

    deltas = streamed(fast, ids)
    assert "".join(deltas) == text  # the special tokens are skipped, as in a non-streamed reply
    assert not any("\ufffd" in d for d in deltas)
    assert sum(bool(d) for d in deltas) > 3

    WrappedDecode.calls = 0
    assert streamed(wrapped, ids) == deltas
    assert WrappedDecode.calls >= len(ids)  # its own decode ran, every token
