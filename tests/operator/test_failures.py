"""Reading why a worker failed from its pod: the kubelet's exit code and reason, and the
termination message that FallbackToLogsOnError makes of the worker's last log lines.

The messages come from the worker's own code (a real worker process, its loader and its GPU
placement planner), so a change of its wording that the operator no longer understands fails
here."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from transformers import LlamaConfig

from kubechat.operator.failures import failure_reason, last_words, load_failure, summarize
from kubechat.operator.reconcile import ObservedPod
from kubechat.worker.loading import LoadOptions, ModelLoadError, load_model
from kubechat.worker.placement import InsufficientGpuMemory, plan_placement

MISSING_MODEL_ARGS = ["--model-path", "/nonexistent/model", "--lease-store", "none"]
MISSING_MODEL_ARGS += ["--host", "127.0.0.1", "--port", "0", "--device", "cpu"]
TAIL_LINES, TAIL_BYTES = 80, 2048  # what the kubelet keeps of the log (FallbackToLogsOnError)


def kubelet_log_tail(log: str) -> str:
    """The termination message a kubelet makes of a container's log."""
    return "\n".join(log.splitlines()[-TAIL_LINES:]).encode()[-TAIL_BYTES:].decode(errors="ignore")


def exited(code: int, reason: str = "Error", message: str = "", ready: bool = False):
    return ObservedPod(
        name="w-1",
        template_hash="h",
        ready=ready,
        phase="Running",
        created=time.time(),
        restarts=1,
        last_exit_code=code,
        last_exit_reason=reason,
        last_exit_message=message,
    )


def too_big_for_the_gpus() -> ModelLoadError:
    """The error the worker's loader raises when the weights exceed the per-GPU caps."""
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    try:
        plan_placement(
            config,
            device="cuda",
            num_gpus=1,
            max_gpu_memory="16KiB",
            dtype="float16",
            cpu_offloading=False,
            gpu_memory_total={0: 2**30},
        )
    except InsufficientGpuMemory as err:
        # as worker/loading.py wraps it
        return ModelLoadError(f"/models/tiny: {err}", "InsufficientGpuMemory")
    raise AssertionError("the model fit under a 16 KiB cap")


@pytest.fixture(scope="module")
def missing_model_log(tmp_path_factory) -> str:
    """Everything a real worker writes when its model path does not exist."""
    result = subprocess.run(
        [sys.executable, "-m", "kubechat.cli", "worker", *MISSING_MODEL_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_real_workers_load_failure_reaches_the_condition(missing_model_log) -> None:
    message = kubelet_log_tail(missing_model_log)
    failure = load_failure(exited(1, message=message))
    assert failure is not None and failure.reason == "WorkerExited"
    assert "model load failed" in failure.message and "/nonexistent/model" in failure.message
    assert "\n" not in failure.message


def test_the_worker_reasons_for_gpu_memory_are_recognized(tmp_path) -> None:
    too_big = too_big_for_the_gpus()
    assert failure_reason("Error", f"INFO loading\n{too_big}") == too_big.reason
    if not torch.cuda.is_available():  # the worker's own reason on a machine without GPUs
        with pytest.raises(ModelLoadError) as none_visible:
            load_model(LoadOptions(str(tmp_path), device="cuda", num_gpus=1))
        assert none_visible.value.reason == "ModelLoadFailed"
        assert failure_reason("Error", str(none_visible.value)) == "WorkerExited"


def test_an_insufficient_gpu_memory_exit_is_the_conditions_reason() -> None:
    message = (
        f"INFO loading /models/tiny\nkubechat worker: model load failed: {too_big_for_the_gpus()}"
    )
    failures = [load_failure(exited(137, "OOMKilled")), load_failure(exited(1, message=message))]
    reason, text = summarize(failures)
    assert reason == "InsufficientGpuMemory"
    assert "exit code 137 (OOMKilled)" in text and "GPU(s) capped at" in text


def test_an_oom_killed_worker_is_a_load_failure() -> None:
    failure = load_failure(exited(137, "OOMKilled"))
    assert failure is not None
    assert (failure.reason, failure.exit_code) == ("OOMKilled", 137)
    assert "OOMKilled" in failure.describe()
    killed = load_failure(exited(137, "Error"))
    assert killed is not None and killed.reason == "WorkerExited"
    assert "SIGKILL" in killed.describe()


def test_stopped_serving_or_never_exited_workers_did_not_fail() -> None:
    assert load_failure(exited(143)) is None  # SIGTERM: deleted, scaled down, rolled
    assert load_failure(exited(0, "Completed")) is None
    assert load_failure(exited(1, ready=True)) is None  # restarted and serving again
    assert summarize([]) is None


def test_last_words_keep_the_last_line_within_bounds() -> None:
    assert last_words("a\nb\n\n  c  \n\n") == "c"
    assert len(last_words("x" * 5000)) == 500
    assert last_words("") == ""
