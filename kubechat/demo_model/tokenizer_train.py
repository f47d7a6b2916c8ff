"""Train the demo model's sentencepiece tokenizer from the dialogue text, deterministically."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from .remote_code.tokenization_kubechat_demo import ASSISTANT_TOKEN, USER_TOKEN


def train_sentencepiece(texts: Iterable[str], out_file: Path, *, vocab_size: int = 1000) -> Path:
    """Write a BPE ``tokenizer.model`` learnt from ``texts`` to ``out_file``.

    Ids 0-2 are ``<unk>``, ``<s>``, ``</s>``; 3 and 4 are the user and assistant role tokens
    (control symbols: sentencepiece never produces them from text). Byte fallback and an identity
    normalizer without a dummy prefix make decode(encode(text)) == text for any unicode text.
    One training thread keeps the result identical from run to run.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=[USER_TOKEN, ASSISTANT_TOKEN],
        num_threads=1,
        minloglevel=2,
    )
    out_file = Path(out_file)
    out_file.write_bytes(model.getvalue())
    return out_file
