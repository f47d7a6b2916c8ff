"""The containers of a vLLM worker pod: vLLM's own OpenAI server, and the kubechat agent.

vLLM runs unmodified from its own image (with its torch and transformers) and holds the pod's
GPUs; the agent runs from kubechat's image, renews the pod's Lease from vLLM's health and load,
and answers the pod's readiness. On deletion both get SIGTERM, vLLM only after a preStop pause:
by then the agent has marked the lease draining and the gateway sends nothing new, and vLLM
finishes what it holds (``--shutdown-timeout``, the drain grace) before it exits.
"""

from __future__ import annotations

import copy
from typing import Any

from kubechat.defaults import WORKER_PORT
from kubechat.plan import WorkerLaunch, WorkerPlan, worker_command_args
from kubechat.vllm_plan import AGENT_PORT

# Seconds vLLM's container waits after the pod is told to stop and before vLLM gets SIGTERM
# (which makes it refuse new requests with 500s): longer than the agent's drain settle, so the
# draining lease has reached the gateway.
VLLM_PRESTOP_SECONDS = 5
SHM_VOLUME = {"name": "shm", "emptyDir": {"medium": "Memory"}}  # NCCL's shared memory (TP > 1)


def vllm_containers(
    plan: WorkerPlan,
    launch: WorkerLaunch,
    worker: dict[str, Any],
    image: str,
    startup_seconds: int,
) -> list[dict[str, Any]]:
    """The two containers, from the container kubechat's own worker would get (``worker``:
    env, mounts, resources and security as the pod renderer made them)."""
    assert plan.vllm is not None
    http = {"port": "http"}
    server = {
        "name": "vllm",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": plan.vllm.argv("python3", "0.0.0.0", WORKER_PORT, launch.drain_grace),
        "env": worker["env"],
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "resources": worker["resources"],
        "volumeMounts": [*worker["volumeMounts"], {"name": "shm", "mountPath": "/dev/shm"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "readinessProbe": {"httpGet": {"path": "/health", **http}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/health", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # loading, compiling and profiling a large model takes minutes
        "startupProbe": {
            "httpGet": {"path": "/health", **http},
            "periodSeconds": 10,
            "failureThreshold": max(1, startup_seconds // 10),
        },
        # exec, not the sleep action: that needs Kubernetes 1.30, the chart supports 1.29
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(VLLM_PRESTOP_SECONDS)]}}},
        "securityContext": copy.deepcopy(worker["securityContext"]),
    }
    agent_http = {"port": "agent"}
    agent = {
        "name": "agent",
        "image": worker["image"],
        "imagePullPolicy": worker["imagePullPolicy"],
        "command": ["python", "-m", "kubechat.cli", "agent"],
        "args": [
            *worker_command_args(plan, launch),
            "--engine-url",
            f"http://127.0.0.1:{WORKER_PORT}",
        ],
        "env": worker["env"],
        "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "volumeMounts": [m for m in worker["volumeMounts"] if m["name"] in ("cache", "tmp")],
        # ready once the lease says vLLM serves: the pod is Ready exactly when it is routable
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", **agent_http},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {"httpGet": {"path": "/health", **agent_http}, "periodSeconds": 10},
        "securityContext": copy.deepcopy(worker["securityContext"]),
    }
    return [server, agent]
