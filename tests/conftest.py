"""Fixtures and settings shared by every test room."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """No model hub at test time, and transformers' copies of remote code stay in a temp dir.

    Set before any test imports transformers, so in-process loads and worker subprocesses alike
    put ``transformers_modules`` under this run's temp dir, never in the user's HF cache.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if "HF_MODULES_CACHE" not in os.environ:
        os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="kubechat-hf-modules-")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (Baichuan-13B-Chat layout), built once per pytest run the way users get it.

    It is built through the same cache as ``kubechat up`` and ``--model-path kubechat:demo``:
    ``$KUBECHAT_CACHE/demo-model``, with ``KUBECHAT_CACHE`` pointed at this run's temp dir (or at
    ``$KUBECHAT_TEST_CACHE`` to keep it across runs; the build is skipped there while the builder,
    the dialogue set and the remote code are unchanged). Processes started by tests inherit it.
    """
    from kubechat.demo_model.cache import ensure_demo_model

    cache = os.environ.get("KUBECHAT_TEST_CACHE") or str(tmp_path_factory.mktemp("kubechat-cache"))
    os.environ["KUBECHAT_CACHE"] = cache
    return ensure_demo_model(progress=False)


@pytest.fixture(scope="session")
def baichuan13b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint in Baichuan-13B-Chat's layout (remote code with its
    ``generation_utils.build_chat_input`` semantics and its first published tokenizer), built
    once per pytest run; see tests/support/baichuan13b_checkpoint.py."""
    from tests.support.baichuan13b_checkpoint import build_baichuan13b_checkpoint

    folder = tmp_path_factory.mktemp("baichuan13b")
    return build_baichuan13b_checkpoint(folder / "Baichuan-13B-Chat")
