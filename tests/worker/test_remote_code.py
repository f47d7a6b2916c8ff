"""Remote code that breaks on this transformers: Baichuan's tokenizer as first published loads
through the compatibility step, unchanged; other failures in a checkpoint's own code say what
failed, where, and what to change.

The checkpoint is tests/support/baichuan13b_checkpoint.py's: its tokenizer file is shaped like
Baichuan's first published one (``super().__init__()`` before ``self.sp_model`` is loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from kubechat.worker.loading import LoadOptions, ModelLoadError, load_model


def copy_of(checkpoint: Path, tmp_path: Path, name: str) -> Path:
    """A copy under a folder name of its own (transformers caches remote code by that name)."""
    return Path(shutil.copytree(checkpoint, tmp_path / name))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_transformers_alone_cannot_construct_the_published_tokenizer(baichuan13b_dir) -> None:
    """The breakage itself, as users meet it (so the test below can fail)."""
    with pytest.raises(TypeError, match="'property' object cannot be interpreted as an integer"):
        AutoTokenizer.from_pretrained(baichuan13b_dir, trust_remote_code=True)


def test_the_worker_loads_it_unchanged_and_says_how(baichuan13b_dir, caplog) -> None:
    tokenizer_file = baichuan13b_dir / "tokenization_baichuan.py"
    before = digest(tokenizer_file)
    with caplog.at_level(logging.WARNING, logger="kubechat.worker.remote_code"):
        loaded = load_model(LoadOptions(str(baichuan13b_dir), trust_remote_code=True))
    assert digest(tokenizer_file) == before
    warning = caplog.text
    assert "BaichuanTokenizer.__init__ in tokenization_baichuan.py calls super().__init__()" in (
        warning
    )
    assert "move the lines that create and load self.sp_model above" in warning
    # the whole vocabulary, and the published class's own encoding (no bos: tokenizer_config)
    pieces = spm.SentencePieceProcessor(model_file=str(baichuan13b_dir / "tokenizer.model"))
    tokenizer = loaded.tokenizer
    assert type(tokenizer).__name__ == "BaichuanTokenizer"
    assert tokenizer.vocab_size == pieces.get_piece_size() == loaded.model.config.vocab_size
    text = "Which mountain is the second highest one in the world? 世界第二高峰"
    assert tokenizer.encode(text) == pieces.encode(text)
    assert tokenizer.decode(pieces.encode(text)) == text


def test_when_the_step_cannot_help_the_error_names_the_fix(baichuan13b_dir, tmp_path) -> None:
    """sp_model_kwargs the step cannot pass on: the original failure, with exception type, file,
    line and what to change in that file (reason RemoteCodeIncompatible)."""
    checkpoint = copy_of(baichuan13b_dir, tmp_path, "baichuan-bad-sp-kwargs")
    config_file = checkpoint / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "sp_model_kwargs": {"no_such_option": 1}}))
    with pytest.raises(ModelLoadError) as caught:
        load_model(LoadOptions(str(checkpoint), trust_remote_code=True))
    error = caught.value
    assert error.reason == "RemoteCodeIncompatible"
    message = str(error)
    assert "could not load the tokenizer of" in message
    assert "TypeError: 'property' object cannot be interpreted as an integer" in message
    assert "(tokenization_baichuan.py, line " in message and "in get_vocab" in message
    assert "calls super().__init__() before it loads self.sp_model" in message
    assert "move the lines that create and load self.sp_model above" in message


def test_any_failure_in_remote_code_says_where(baichuan13b_dir, tmp_path) -> None:
    checkpoint = copy_of(baichuan13b_dir, tmp_path, "baichuan-bad-modeling")
    modeling = checkpoint / "modeling_baichuan.py"
    code = modeling.read_text()
    broken = code.replace(
        "    config_class = BaichuanConfig\n",
        "    config_class = BaichuanConfig\n\n"
        "    def __init__(self, config):\n"
        "        super().__init__(config)\n"
        "        self.window = config.no_such_setting\n",
        1,
    )
    assert broken != code
    modeling.write_text(broken)
    with pytest.raises(ModelLoadError) as caught:
        load_model(LoadOptions(str(checkpoint), trust_remote_code=True))
    assert caught.value.reason == "RemoteCodeIncompatible"
    message = str(caught.value)
    assert "could not load the weights of" in message and "AttributeError" in message
    line = broken.splitlines().index("        self.window = config.no_such_setting") + 1
    assert f"(modeling_baichuan.py, line {line}, in __init__: self.window = " in message
    assert "does not run with transformers" in message
