"""Why a worker could not come up, in the form the worker writes and the operator reads.

A worker that fails to load its model (or to start its engine) writes one JSON object,
``{"reason": ..., "message": ...}``, to its termination-message file and exits 1. In a pod that
file is the container's ``terminationMessagePath``: the operator's pods set it to
``TERMINATION_MESSAGE_PATH`` and pass the same path in ``TERMINATION_MESSAGE_ENV``; the kubelet
then reports the object as the container's ``lastState.terminated.message``, and the operator
turns it into the ModelLoadFailed condition. ``reason`` is the worker's ``ModelLoadError.reason``
(``InsufficientGpuMemory``, ``RemoteCodeIncompatible``, ``InvalidSpec``, ``ModelLoadFailed``);
``message`` says what failed and what to change.

A worker that dies without writing one (killed, or crashed before it could) leaves the file
empty; ``FallbackToLogsOnError`` then makes the tail of its log the termination message, which
:func:`parse_report` does not take for a report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # Kubernetes' default path, set explicitly
TERMINATION_MESSAGE_ENV = "KUBECHAT_TERMINATION_MESSAGE_PATH"
MAX_BYTES = 4096  # the kubelet keeps at most this much of a container's termination message


@dataclass(frozen=True)
class LoadFailureReport:
    """A worker's account of why it exits: a reason (CamelCase) and a message for people."""

    reason: str
    message: str

    def to_text(self, max_bytes: int = MAX_BYTES) -> str:
        """One line of JSON, at most ``max_bytes`` long (the message shortened in the middle)."""
        message = self.message
        while True:
            text = json.dumps({"reason": self.reason, "message": message}, ensure_ascii=False)
            excess = len(text.encode()) - max_bytes
            if excess <= 0 or not message:
                return text
            message = shorten(message, max(0, len(message) - excess - 3))


def parse_report(text: str) -> LoadFailureReport | None:
    """The report in a termination message, or None when it holds none (a log tail)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    reason, message = data.get("reason"), data.get("message")
    if not isinstance(reason, str) or not reason or not isinstance(message, str):
        return None
    return LoadFailureReport(reason, message)


def termination_message_path(environ: dict[str, str] | None = None) -> Path | None:
    """Where to write the report: ``$KUBECHAT_TERMINATION_MESSAGE_PATH``, else Kubernetes'
    default path when it exists (the kubelet creates it in every container), else None."""
    environ = os.environ if environ is None else environ
    if environ.get(TERMINATION_MESSAGE_ENV):
        return Path(environ[TERMINATION_MESSAGE_ENV])
    default = Path(TERMINATION_MESSAGE_PATH)
    return default if default.is_file() else None


def write_report(report: LoadFailureReport, path: Path | None) -> bool:
    """Write ``report`` to ``path``; False (and nothing written) when there is no path or it
    cannot be written, as outside a pod."""
    if path is None:
        return False
    try:
        path.write_text(report.to_text(), encoding="utf-8")
    except OSError:
        return False
    return True


def shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: its start and its end around " … " (a load
    failure's message says what failed first and what to change last)."""
    if len(text) <= limit:
        return text
    if limit <= 3:
        return text[:limit]
    head = (limit - 3) * 2 // 5
    return f"{text[:head]} … {text[len(text) - (limit - 3 - head) :]}"
