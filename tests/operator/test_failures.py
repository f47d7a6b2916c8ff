"""Reading why a worker failed from its pod: the worker's structured report (its termination
message), else the kubelet's exit code and reason and the log tail FallbackToLogsOnError leaves.

The reports come from real worker processes (a missing model, a checkpoint whose own code breaks)
and from the worker's own loader and GPU placement planner, so a change of the report's form or
reasons that the operator no longer reads fails here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from kubechat.load_failure import TERMINATION_MESSAGE_ENV, LoadFailureReport, parse_report
from kubechat.operator.failures import MESSAGE_LIMIT, last_words, load_failure, summarize
from kubechat.operator.reconcile import ObservedPod
from kubechat.worker.loading import LoadOptions, ModelLoadError, load_model
from kubechat.worker.placement import InsufficientGpuMemory, plan_placement
from kubechat.worker.state import load_failure_report
from tests.support.baichuan13b_checkpoint import broken_modeling_checkpoint

WORKER_ARGS = ["--lease-store", "none", "--host", "127.0.0.1", "--port", "0", "--device", "cpu"]
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


def run_worker(model_path: Path | str, tmp_path: Path, *extra: str) -> tuple[str, str]:
    """(everything a real worker printed, its termination-message file) when it cannot load."""
    message_file = tmp_path / "termination-log"
    message_file.write_text("")  # the kubelet creates the file empty
    argv = [sys.executable, "-m", "kubechat.cli", "worker", "--model-path", str(model_path)]
    result = subprocess.run(
        [*argv, *WORKER_ARGS, *extra],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, TERMINATION_MESSAGE_ENV: str(message_file)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout + result.stderr, message_file.read_text()


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


def test_a_real_workers_report_reaches_the_condition(tmp_path) -> None:
    log, message = run_worker("/nonexistent/model", tmp_path)
    report = parse_report(message)
    assert report is not None and report.reason == "InvalidSpec"
    assert "/nonexistent/model" in report.message
    # the log says the same for people, on its last line
    assert log.strip().splitlines()[-1] == (
        f"kubechat worker: model load failed (InvalidSpec): {report.message}"
    )
    failure = load_failure(exited(1, message=message))
    assert failure is not None and failure.reason == "WorkerExited"
    assert failure.message == report.message and "\n" not in failure.describe()


def test_remote_code_that_breaks_is_its_own_reason(baichuan13b_dir, tmp_path) -> None:
    """A checkpoint whose own modeling code fails: RemoteCodeIncompatible, with the exception
    type, the file and line, read by the operator from a real worker's report."""
    checkpoint = broken_modeling_checkpoint(baichuan13b_dir, tmp_path)
    _, message = run_worker(checkpoint, tmp_path, "--trust-remote-code")
    failure = load_failure(exited(1, message=message))
    assert failure is not None and failure.reason == "RemoteCodeIncompatible"
    assert "AttributeError" in failure.message
    assert "(modeling_baichuan.py, line " in failure.message
    assert summarize([failure, load_failure(exited(137, "OOMKilled"))])[0] == (
        "RemoteCodeIncompatible"
    )


def test_the_worker_reasons_for_gpu_memory_are_the_conditions(tmp_path) -> None:
    report = load_failure_report(too_big_for_the_gpus())
    failure = load_failure(exited(1, message=report.to_text()))
    assert failure is not None and failure.reason == "InsufficientGpuMemory"
    assert "GPU(s) capped at" in failure.message
    if not torch.cuda.is_available():  # the worker's own reason on a machine without GPUs
        with pytest.raises(ModelLoadError) as none_visible:
            load_model(LoadOptions(str(tmp_path), device="cuda", num_gpus=1))
        unseen = load_failure(exited(1, message=load_failure_report(none_visible.value).to_text()))
        assert unseen is not None and unseen.reason == "WorkerExited"
        assert "CUDA GPU(s) visible" in unseen.message


def test_the_reason_comes_from_the_report_not_from_words_in_a_log() -> None:
    """A log tail that merely mentions GPU memory is a worker that exited, and a report's
    reason is what counts, whatever its message says."""
    tail = "INFO loading\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert load_failure(exited(1, message=tail)).reason == "WorkerExited"
    worded = LoadFailureReport("ModelLoadFailed", "weights need 3 GiB but 1 GPU(s) capped at 1")
    assert load_failure(exited(1, message=worded.to_text())).reason == "WorkerExited"


def test_an_insufficient_gpu_memory_exit_is_the_conditions_reason() -> None:
    report = load_failure_report(too_big_for_the_gpus())
    failures = [
        load_failure(exited(137, "OOMKilled")),
        load_failure(exited(1, message=report.to_text())),
    ]
    reason, text = summarize(failures)
    assert reason == "InsufficientGpuMemory"
    assert "exit code 137 (OOMKilled)" in text and "GPU(s) capped at" in text


def test_a_worker_that_died_without_a_report_shows_its_last_words() -> None:
    tail = kubelet_log_tail("INFO loading\n" * 200 + "Fatal Python error: Segmentation fault\n")
    failure = load_failure(exited(139, message=tail))
    assert failure.reason == "WorkerExited"
    assert failure.message == "Fatal Python error: Segmentation fault"


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


def test_messages_stay_within_bounds_keeping_both_ends() -> None:
    assert last_words("a\nb\n\n  c  \n\n") == "c"
    assert len(last_words("x" * 5000)) == MESSAGE_LIMIT
    assert last_words("") == ""
    long = LoadFailureReport("RemoteCodeIncompatible", "what failed " + "x" * 9000 + " the fix")
    text = long.to_text()
    assert len(text.encode()) <= 4096  # what the kubelet keeps of a termination message
    failure = load_failure(exited(1, message=text))
    assert len(failure.message) == MESSAGE_LIMIT
    assert failure.message.startswith("what failed") and failure.message.endswith("the fix")
