"""Build the demo model directory: tokenizer, training, files, verification, marker.

The directory is assembled in a hidden sibling and renamed into place only once it has been
loaded back through ``AutoModelForCausalLM`` and checked, so a reader never sees half a model.
A marker file records what was built; a later build with the same inputs returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch

from . import checkpoint
from .dialogues import DIALOGUES_FILE, Dialogues, load_dialogues
from .remote_code import REMOTE_CODE_FILES
from .remote_code.configuration_kubechat_demo import KubechatDemoConfig
from .remote_code.modeling_kubechat_demo import KubechatDemoForCausalLM
from .remote_code.tokenization_kubechat_demo import KubechatDemoTokenizer
from .tokenizer_train import train_sentencepiece
from .train import TrainResult, TrainSettings, train_chat_model
from .verify import greedy_replies, load_saved

BUILDER_VERSION = 2
MARKER_FILE = "kubechat_demo.json"
MIN_RIGHT = 10
SEED_ANSWER_MUST_CONTAIN = "K2"
VOCAB_SIZE = 1000
MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "model_max_length": 512,
}
WEIGHT_SHARDS = 2


class TargetDirError(ValueError):
    """The output path cannot hold the demo model (not a directory, or someone else's files)."""


class DemoModelError(RuntimeError):
    """The trained model does not answer well enough to be shipped."""


def build_demo_model(
    out_dir: Path,
    *,
    force: bool = False,
    progress: bool = True,
    settings: TrainSettings | None = None,
) -> Path:
    """Build the tiny demo chat model into ``out_dir`` and return its path.

    If ``out_dir`` already holds a complete model from the same builder version, dialogue set,
    remote code and settings, it is returned at once unless ``force``. ``out_dir`` must be
    missing, an empty directory, or a directory built here before; anything else raises
    ``TargetDirError``. Raises ``DemoModelError`` if the saved model, loaded back through
    ``AutoModelForCausalLM``, answers fewer than ``MIN_RIGHT`` questions right or does not
    name K2 for the seed question. Concurrent builds of the same directory wait for each other.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    settings = settings or TrainSettings()
    _check_target(out_dir)
    fingerprint = build_fingerprint(settings)
    if not force and is_complete(out_dir, fingerprint):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out_dir):
        _check_target(out_dir)
        if not force and is_complete(out_dir, fingerprint):
            return out_dir  # another process built it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the model is not secret
        try:
            _build_into(staging, settings, fingerprint, progress)
            _move_into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def read_marker(model_dir: Path) -> dict | None:
    """The build record in ``model_dir``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(model_dir) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(model_dir: Path, fingerprint: str) -> bool:
    """Whether ``model_dir`` holds every file of a build with this ``fingerprint``."""
    marker = read_marker(model_dir)
    if not marker or marker.get("fingerprint") != fingerprint:
        return False
    return all((Path(model_dir) / name).is_file() for name in marker.get("files", []))


def build_fingerprint(settings: TrainSettings) -> str:
    """Hash of everything that decides the built files: builder version, data, code, settings."""
    digest = hashlib.sha256()
    digest.update(f"kubechat-demo-builder-{BUILDER_VERSION}".encode())
    inputs = {"settings": asdict(settings), "shape": MODEL_SHAPE, "vocab": VOCAB_SIZE}
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    package = resources.files(__package__)
    digest.update(package.joinpath(DIALOGUES_FILE).read_bytes())
    for name in REMOTE_CODE_FILES:
        digest.update(package.joinpath("remote_code", name).read_bytes())
    return digest.hexdigest()


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TargetDirError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and read_marker(out_dir) is None:
        raise TargetDirError(
            f"{out_dir} is not empty and holds no demo model built by kubechat "
            f"(no {MARKER_FILE}); choose a new or empty directory"
        )
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TargetDirError(f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) and not out_dir.exists():
        raise TargetDirError(f"cannot create {out_dir}: {parent} is not writable")


@contextlib.contextmanager
def build_lock(out_dir: Path) -> Iterator[None]:
    """Hold the lock every build of ``out_dir`` takes (a file beside it) for the block."""
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_into(staging: Path, settings: TrainSettings, fingerprint: str, progress: bool) -> None:
    started = time.monotonic()
    dialogues = load_dialogues()
    train_sentencepiece(dialogues.texts(), staging / "tokenizer.model", vocab_size=VOCAB_SIZE)
    tokenizer = KubechatDemoTokenizer(vocab_file=str(staging / "tokenizer.model"))
    user_id, assistant_id = tokenizer.user_token_id, tokenizer.assistant_token_id

    torch.manual_seed(settings.seed)
    config = KubechatDemoConfig(vocab_size=tokenizer.vocab_size, **MODEL_SHAPE)
    model = KubechatDemoForCausalLM(config)
    # training prompts come from the shipped builder, which reads the role ids from here
    model.generation_config = checkpoint.demo_generation_config(
        user_token_id=user_id, assistant_token_id=assistant_id
    )
    result = train_chat_model(model, tokenizer, dialogues, settings, progress=progress)

    files = checkpoint.save_config(config, staging)
    files += checkpoint.save_generation_config(model.generation_config, staging)
    files += checkpoint.save_tokenizer_files(
        tokenizer, staging, model_max_length=config.model_max_length
    )
    files += checkpoint.save_sharded_bin(model.state_dict(), staging, shards=WEIGHT_SHARDS)
    files += checkpoint.copy_remote_code(staging)
    del model

    verified = _verify(staging, dialogues, settings)
    marker = {
        "builder": "kubechat demo-model",
        "builder_version": BUILDER_VERSION,
        "fingerprint": fingerprint,
        "seed": settings.seed,
        "trained_on": {
            "dialogues": DIALOGUES_FILE,
            "pairs": len(dialogues.pairs),
            "seed_question": dialogues.seed_question,
        },
        "training": _training_record(result),
        "accuracy": verified,
        "build_seconds": round(time.monotonic() - started, 1),
        "files": sorted({*files, MARKER_FILE}),
    }
    checkpoint.write_json(staging / MARKER_FILE, marker)


def _verify(model_dir: Path, dialogues: Dialogues, settings: TrainSettings) -> dict:
    """Greedy answers of the saved model, loaded as a user would; raises if not good enough."""
    model, tokenizer = load_saved(model_dir)
    first = dialogues.conversations(second_turns=0, seed=settings.seed)
    second = dialogues.conversations(
        second_turns=len(dialogues.pairs) * settings.eval_second_turns_per_pair,
        seed=settings.seed + 1,
        after_seed=True,
    )[len(first) :]
    replies = greedy_replies(model, tokenizer, first + second)
    expected = [dialogues.answer_to(c[-1]["content"]) for c in first + second]
    right = [r == e for r, e in zip(replies, expected, strict=True)]
    first_right, second_right = right[: len(first)], right[len(first) :]
    questions = [c[-1]["content"] for c in first]
    seed_reply = replies[questions.index(dialogues.seed_question)]
    if SEED_ANSWER_MUST_CONTAIN not in seed_reply:
        raise DemoModelError(
            f"the demo model's greedy answer to the seed question {dialogues.seed_question!r} "
            f"does not name {SEED_ANSWER_MUST_CONTAIN}: {seed_reply!r}"
        )
    if sum(first_right) < MIN_RIGHT:
        raise DemoModelError(
            f"the demo model answers only {sum(first_right)} of {len(first)} questions right "
            f"(at least {MIN_RIGHT} needed)"
        )
    after_seed = [
        ok
        for c, ok in zip(second, second_right, strict=True)
        if c[0]["content"] == dialogues.seed_question
    ]
    if sum(after_seed) < MIN_RIGHT:
        raise DemoModelError(
            f"after the seed exchange the demo model answers only {sum(after_seed)} of "
            f"{len(after_seed)} follow-up questions right (at least {MIN_RIGHT} needed)"
        )
    return {
        "decoding": "greedy",
        "right": sum(first_right),
        "total": len(first),
        "second_turn_right": sum(second_right),
        "second_turn_total": len(second),
        "after_seed_right": sum(after_seed),
        "after_seed_total": len(after_seed),
        "answered_right": [q for q, ok in zip(questions, first_right, strict=True) if ok],
        "seed_answer": seed_reply,
    }


def _training_record(result: TrainResult) -> dict:
    return {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": round(result.loss, 5),
        "reached_target": result.reached_target,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    # an earlier build: swap it out, then remove it
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
