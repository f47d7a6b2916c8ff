"""End to end, local mode: ``kubechat up`` with ``examples/demo-autoscaled.yaml`` (its window and
delay cut to seconds): no worker at start, the openai SDK's request waits for one and gets K2, a
burst raises the workers to maxReplicas, idle brings them back to zero; no request fails."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from kubechat.discovery.local_store import LocalLeaseStore
from tests.support.burst import sustained_burst

from .conftest import REPO, Stack, start_stack, stop_stack

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "demo-autoscaled.yaml"
SEED = "Which mountain is the second highest one in the world?"
FAST = {"targetRequests": 1, "windowSeconds": 2, "scaleDownDelaySeconds": 3}


def fast_manifest(folder: Path) -> Path:
    """The example with seconds instead of minutes."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["autoscaling"].update(FAST)
    path = folder / "autoscaled.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def workers(stack: Stack) -> list[str]:
    """Names of the workers holding a lease now."""
    return [r.name for r in LocalLeaseStore(stack.state_dir / "leases").snapshot()]


@pytest.fixture(scope="module")
def stack(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("autoscaled")
    up = start_stack(demo_model_dir, base, "--no-ui", manifest=fast_manifest(base))
    yield up
    stop_stack(up.proc)


def test_zero_to_max_and_back_without_a_failed_request(stack: Stack) -> None:
    assert workers(stack) == [] and stack.worker_pids() == {}, "minReplicas 0: no worker"
    assert "none until the first request" in stack.log.read_text()

    client = OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=600)
    reply = client.chat.completions.create(
        model="kubechat-demo", messages=[{"role": "user", "content": SEED}], temperature=0
    )
    assert "K2" in reply.choices[0].message.content
    assert len(stack.worker_pids()) >= 1

    def stream() -> tuple[int, str]:
        body = {
            "model": "kubechat-demo",
            "messages": [{"role": "user", "content": SEED}],
            "max_tokens": 150,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=600) as r:
            return r.status_code, r.read().decode()

    # the burst lasts until the second worker is live (bounded at 180 s)
    answers, most = sustained_burst(stream, lambda: len(workers(stack)), target=2)
    assert [code for code, _ in answers] == [200] * len(answers)
    for _, text in answers:
        assert '"error"' not in text and text.rstrip().endswith("data: [DONE]")
    assert most == 2, "the burst raised the workers to maxReplicas"

    deadline = time.monotonic() + 120
    while (workers(stack) or stack.worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert workers(stack) == [] and stack.worker_pids() == {}, "idle: back to zero"
    log = stack.log.read_text()
    assert "ScaledUp: 0 -> 1 workers: a request is waiting for the model" in log
    assert "-> 2 workers: average load" in log
    assert "-> 0 workers: average load 0.00" in log
