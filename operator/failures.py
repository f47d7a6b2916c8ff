"""Why workers fail to come up: exit codes, the kubelet's reason and the termination message,
read into the ModelLoadFailed condition's reason and message.

Worker containers have ``terminationMessagePolicy: FallbackToLogsOnError``, so the termination
message of a worker that exits non-zero is the tail of its log. A worker that cannot load its
model prints ``kubechat worker: model load failed: <why>`` as its last line (worker/command.py),
and ``<why>`` is the ModelLoadError's message (worker/loading.py, worker/placement.py): the
phrases below are the ones it uses when the weights do not fit the GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .reconcile import ObservedPod

# A worker stopped on purpose (SIGTERM: deletion, scale-down, roll) did not fail.
STOPPED_EXIT_CODES = (0, 143)
SIGKILL_EXIT_CODE = 137
MESSAGE_LIMIT = 500  # characters of each pod's termination message kept in the condition

# Most specific first: the condition carries the reason of the most specific failure.
REASONS = ("InsufficientGpuMemory", "OOMKilled", "WorkerExited")

_GPU_MEMORY = re.compile(
    r"InsufficientGpuMemory"
    r"|weights need .+ GPU\(s\) capped at"  # placement: the weights exceed the per-GPU caps
    r"|ran out of GPU memory"  # loading: torch.cuda.OutOfMemoryError while loading
    r"|CUDA out of memory"  # torch's own OutOfMemoryError text
    r"|GPU\(s\) asked for but [1-9][0-9]* CUDA GPU\(s\) visible",  # fewer GPUs than asked
)


@dataclass(frozen=True)
class LoadFailure:
    """A worker that exited and is not serving: its pod, exit code, reason and last words."""

    pod: str
    exit_code: int
    reason: str  # one of REASONS
    message: str

    def describe(self) -> str:
        """``pod: exit code N (reason): message`` for the condition's message."""
        text = f"{self.pod}: exit code {self.exit_code} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


def last_words(message: str) -> str:
    """The last non-empty line of a termination message (a log tail ends with the worker's
    own account of why it exits), at most ``MESSAGE_LIMIT`` characters."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1][-MESSAGE_LIMIT:] if lines else ""


def failure_reason(kubelet_reason: str, message: str) -> str:
    """InsufficientGpuMemory when the message says the model does not fit the GPUs,
    OOMKilled when the kubelet says the container ran out of memory, else WorkerExited."""
    if _GPU_MEMORY.search(message):
        return "InsufficientGpuMemory"
    if kubelet_reason == "OOMKilled":
        return "OOMKilled"
    return "WorkerExited"


def load_failure(pod: ObservedPod) -> LoadFailure | None:
    """The failure of a pod that is not Ready after its worker exited, or None."""
    if pod.ready or pod.restarts == 0 or pod.last_exit_code in (None, *STOPPED_EXIT_CODES):
        return None
    message = last_words(pod.last_exit_message)
    if not message and pod.last_exit_code == SIGKILL_EXIT_CODE:
        message = "killed (SIGKILL)" if pod.last_exit_reason != "OOMKilled" else "out of memory"
    return LoadFailure(
        pod=pod.name,
        exit_code=int(pod.last_exit_code),
        reason=failure_reason(pod.last_exit_reason, pod.last_exit_message),
        message=message,
    )


def summarize(failures: Iterable[LoadFailure]) -> tuple[str, str] | None:
    """The ModelLoadFailed condition's reason (the most specific) and message, or None."""
    failures = list(failures)
    if not failures:
        return None
    reason = min((f.reason for f in failures), key=REASONS.index)
    return reason, "; ".join(f.describe() for f in failures)
