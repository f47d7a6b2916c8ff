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
    """A built demo model directory (Baichuan-13B-Chat layout), built once per pytest run.

    Set ``KUBECHAT_TEST_CACHE`` to keep it in ``$KUBECHAT_TEST_CACHE/demo`` across runs: the
    build is skipped there while the builder, the dialogue set and the remote code are unchanged.
    """
    from kubechat.demo_model.build import build_demo_model

    cache = os.environ.get("KUBECHAT_TEST_CACHE")
    target = Path(cache) / "demo" if cache else tmp_path_factory.mktemp("demo-model")
    return build_demo_model(target, progress=False)
