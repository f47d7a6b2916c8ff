"""Real vLLM for tests: its environment (built by .ci/install-vllm.sh), the benchmark model, and
its OpenAI server's command line.

Tests that need vLLM take the ``vllm_python`` fixture. Without the environment they are skipped
on a developer's machine, with the command that builds it; under CI (``CI=true``) they fail, so a
broken install never passes as skipped tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from kubechat.vllm_env import vllm_python as find_vllm_python

# vLLM's CPU backend takes this much memory for its KV cache (GiB); its default is far more than
# a test needs next to other test processes.
VLLM_TEST_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
# About a minute on an idle machine (mostly imports, in three processes); minutes on a busy one.
VLLM_START_TIMEOUT = 420.0


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM environment's Python (skip without it; under CI=true, fail)."""
    try:
        return find_vllm_python()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"vLLM is required under CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def bench_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark model's folder (benchmarks/bench_model.py), built once per test run."""
    from benchmarks.bench_model import build

    return build(tmp_path_factory.mktemp("bench-model"))


def vllm_server_argv(
    python: Path, model_dir: Path, port: int, *, name: str, max_num_seqs: int = 8
) -> list[str]:
    """vLLM's OpenAI server on the benchmark model, on 127.0.0.1:``port``, as ``name``."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        str(max_num_seqs),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # no torch.compile: the engine starts in about 15 s instead of 50 (more under load);
        # tests measure behaviour, not speed
        "--enforce-eager",
    ]


async def greedy_tokens(client: AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> int:
    """The completion tokens of a greedy, non-streamed chat completion of ``prompt``."""
    reply = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
    )
    return reply.usage.completion_tokens


async def streamed_greedy(
    client: AsyncOpenAI, model: str, prompt: str, max_tokens: int
) -> tuple[int, str | None]:
    """Stream a greedy chat completion of ``prompt`` with usage to its end: the completion tokens
    the usage chunk counts (0 without one) and the last finish reason."""
    chunks = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens, finish = 0, None
    async for chunk in chunks:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return tokens, finish
