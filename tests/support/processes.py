"""The tests' process helpers: free ports, waiting for a condition or an HTTP answer, running and
stopping kubechat processes. One implementation, shared with the benchmarks: benchmarks/processes.py
(free ports themselves come from kubechat.local_runner)."""

from __future__ import annotations

from benchmarks.processes import (
    free_port,
    kubechat_argv,
    running,
    stop,
    tail,
    until,
    until_async,
    wait_http,
)

__all__ = [
    "free_port",
    "kubechat_argv",
    "running",
    "stop",
    "tail",
    "until",
    "until_async",
    "wait_http",
]
