"""Render one replica's WorkerPlan as a Pod manifest (a plain dict, as the API takes it)."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from kubechat.defaults import DRAIN_GRACE, LEASE_DURATION, LEASE_RENEW_INTERVAL, WORKER_PORT
from kubechat.discovery.records import DEPLOYMENT_LABEL
from kubechat.load_failure import TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH
from kubechat.plan import WorkerLaunch, WorkerPlan, worker_command_args
from kubechat.spec import API_VERSION, KIND
from kubechat.vllm_plan import AGENT_PORT, DEFAULT_VLLM_IMAGE

from .vllm_pods import SHM_VOLUME, VLLM_PRESTOP_SECONDS, vllm_containers

TEMPLATE_HASH_LABEL = "kubechat.dev/template-hash"
CACHE_DIR = "/var/cache/kubechat"  # writable emptyDir: demo model, remote-code modules, hub cache
RUN_AS = 10001  # the image's user and group (Dockerfile), as the chart runs its own pods
COMMON_LABELS = {
    "app.kubernetes.io/name": "kubechat",
    "app.kubernetes.io/component": "worker",
    "app.kubernetes.io/managed-by": "kubechat-operator",
}


@dataclass(frozen=True)
class PodSettings:
    """What the operator adds to every worker pod (from its flags)."""

    image: str = "ghcr.io/kubechat/kubechat:0.1.0"
    vllm_image: str = DEFAULT_VLLM_IMAGE  # engine: vllm, unless spec.vllm.image names another
    service_account: str = "kubechat-worker"
    drain_grace: int = DRAIN_GRACE
    lease_renew_interval: float = LEASE_RENEW_INTERVAL
    lease_duration: float = LEASE_DURATION
    startup_seconds: int = 3600  # how long a model may take to load before the pod is restarted
    # Secrets (in each workers' namespace) for pulling ``image``: the operator picks the image,
    # so its credentials come with it rather than with each ModelDeployment.
    image_pull_secrets: tuple[str, ...] = ()


def worker_labels(deployment: str, template_hash: str, extra: dict[str, str]) -> dict[str, str]:
    """Labels of a worker pod: the deployment's own, then ours (ours win)."""
    return {
        **extra,
        **COMMON_LABELS,
        "app.kubernetes.io/instance": deployment,
        DEPLOYMENT_LABEL: deployment,
        TEMPLATE_HASH_LABEL: template_hash,
    }


def pod_name(deployment: str, template_hash: str) -> str:
    """``<deployment>-<hash6>-<5 random>``: unique, and shows which template a pod runs."""
    alphabet = string.ascii_lowercase + string.digits
    suffix = "".join(secrets.choice(alphabet) for _ in range(5))
    return f"{deployment[:45]}-{template_hash[:6]}-{suffix}"


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def render_pod(
    plan: WorkerPlan,
    name: str,
    owner: dict[str, Any],
    settings: PodSettings,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Pod for one replica; ``owner`` is the ModelDeployment (metadata with uid)."""
    launch = WorkerLaunch(
        host="0.0.0.0",
        port=AGENT_PORT if plan.vllm else WORKER_PORT,
        lease_store="kubernetes",
        lease_renew_interval=settings.lease_renew_interval,
        lease_duration=settings.lease_duration,
        drain_grace=settings.drain_grace,
    )
    env = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        {"name": "KUBECHAT_CACHE", "value": CACHE_DIR},
        {"name": TERMINATION_MESSAGE_ENV, "value": TERMINATION_MESSAGE_PATH},
        {"name": "HF_MODULES_CACHE", "value": f"{CACHE_DIR}/modules"},
        {"name": "HOME", "value": CACHE_DIR},
    ]
    env += [{"name": k, "value": v} for k, v in plan.env.items()]
    mounts = [{"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    for i, v in enumerate(plan.volumes):
        volumes.append(
            {
                "name": f"model-{i}",
                "persistentVolumeClaim": {"claimName": v.claim_name, "readOnly": v.read_only},
            }
        )
        mounts.append({"name": f"model-{i}", "mountPath": v.mount_path, "readOnly": v.read_only})
    resources: dict[str, Any] = {}
    if plan.resources.requests():
        resources["requests"] = plan.resources.requests()
    if plan.resources.limits():
        resources["limits"] = plan.resources.limits()
    http = {"port": "http"}
    container = {
        "name": "worker",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "kubechat.cli", "worker"],
        "args": worker_command_args(plan, launch),
        "env": env,
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": mounts,
        # A worker that cannot load its model writes why (kubechat/load_failure.py) to this file
        # before it exits 1; the kubelet reports it as the termination message, which the
        # ModelLoadFailed condition shows. A worker that dies without writing it leaves its
        # log's tail there instead.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", **http},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": "/health", **http},
            "periodSeconds": 10,
            "failureThreshold": max(1, settings.startup_seconds // 10),
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    containers = [container]
    grace = settings.drain_grace + 15
    if plan.vllm is not None:
        image = plan.vllm.image or settings.vllm_image
        containers = vllm_containers(plan, launch, container, image, settings.startup_seconds)
        volumes.append(dict(SHM_VOLUME))
        grace += VLLM_PRESTOP_SECONDS
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": worker_labels(plan.deployment, plan.template_hash, extra_labels or {}),
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": owner["name"],
                    "uid": owner["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": settings.service_account,
            "automountServiceAccountToken": True,
            "terminationGracePeriodSeconds": grace,
            "restartPolicy": "Always",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            "volumes": volumes,
            **plan.scheduling.pod_fields(),
            **(
                {"imagePullSecrets": [{"name": n} for n in settings.image_pull_secrets]}
                if settings.image_pull_secrets
                else {}
            ),
        },
    }
