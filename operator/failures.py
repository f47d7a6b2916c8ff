"""Why workers fail to come up: the worker's own report, the kubelet's exit code and reason,
read into the ModelLoadFailed condition's reason and message.

A worker that cannot load its model writes a structured report (kubechat/load_failure.py) as its
container's termination message: the condition takes its reason when the operator knows it
(``WORKER_REASONS``) and its message. A worker that died without writing one (killed, or a crash
before it could) has the tail of its log there (``FallbackToLogsOnError``): its last line is the
message, and the kubelet's reason says whether it ran out of memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubechat.load_failure import parse_report, shorten

from .reconcile import ObservedPod

# A worker stopped on purpose (SIGTERM: deletion, scale-down, roll) did not fail.
STOPPED_EXIT_CODES = (0, 143)
SIGKILL_EXIT_CODE = 137
MESSAGE_LIMIT = 1000  # characters of each pod's account kept in the condition

# Reasons of the worker's own report that the condition shows as they are; any other (a
# missing model path, an unknown dtype, ...) is WorkerExited, with the worker's message.
WORKER_REASONS = ("InsufficientGpuMemory", "RemoteCodeIncompatible")
# Most specific first: the condition carries the reason of the most specific failure.
REASONS = (*WORKER_REASONS, "OOMKilled", "WorkerExited")


@dataclass(frozen=True)
class LoadFailure:
    """A worker that exited and is not serving: its pod, exit code, reason and account."""

    pod: str
    exit_code: int
    reason: str  # one of REASONS
    message: str

    def describe(self) -> str:
        """``pod: exit code N (reason): message`` for the condition's message."""
        text = f"{self.pod}: exit code {self.exit_code} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


def last_words(message: str) -> str:
    """The last non-empty line of a log tail (a worker's last words before it died), at most
    ``MESSAGE_LIMIT`` characters."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return shorten(lines[-1], MESSAGE_LIMIT) if lines else ""


def load_failure(pod: ObservedPod) -> LoadFailure | None:
    """The failure of a pod that is not Ready after its worker exited, or None."""
    if pod.ready or pod.restarts == 0 or pod.last_exit_code in (None, *STOPPED_EXIT_CODES):
        return None
    exit_code = int(pod.last_exit_code)
    report = parse_report(pod.last_exit_message)
    if report is not None:
        reason = report.reason if report.reason in WORKER_REASONS else "WorkerExited"
        message = shorten(report.message, MESSAGE_LIMIT)
    else:
        reason = "OOMKilled" if pod.last_exit_reason == "OOMKilled" else "WorkerExited"
        message = last_words(pod.last_exit_message)
        if not message and exit_code == SIGKILL_EXIT_CODE:
            message = "out of memory" if reason == "OOMKilled" else "killed (SIGKILL)"
    return LoadFailure(pod=pod.name, exit_code=exit_code, reason=reason, message=message)


def summarize(failures: Iterable[LoadFailure]) -> tuple[str, str] | None:
    """The ModelLoadFailed condition's reason (the most specific) and message, or None."""
    failures = list(failures)
    if not failures:
        return None
    reason = min((f.reason for f in failures), key=REASONS.index)
    return reason, "; ".join(f.describe() for f in failures)
