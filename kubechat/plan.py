"""From a ModelDeployment to per-replica worker plans: arguments, environment, resources, volumes.

The operator renders a plan as Pods and ``kubechat up`` renders the same plan as local processes,
so nothing here is specific to either: no host, port, pod name or image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .spec import ModelDeployment
from .vllm_plan import VllmServerPlan, agent_args, vllm_server_plan

GPU_RESOURCE = "nvidia.com/gpu"
HUB_CACHE_DIR = "huggingface"  # HF_HOME = <mountPath>/huggingface


@dataclass(frozen=True)
class VolumePlan:
    """A persistent volume claim mounted read-only; the hub cache lives under it."""

    claim_name: str
    mount_path: str
    read_only: bool = True

    @property
    def hub_cache(self) -> str:
        """The HF_HOME directory inside the mount."""
        return f"{self.mount_path}/{HUB_CACHE_DIR}"


@dataclass(frozen=True)
class ResourcePlan:
    """What one worker asks for: GPUs as a limit, CPU and memory as requests and limits."""

    gpus: int = 0
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None  # spec.resources.memoryLimit, else the memory request

    def requests(self) -> dict[str, str]:
        """Kubernetes resource requests (extended resources default their request to the limit)."""
        out = {}
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.memory is not None:
            out["memory"] = self.memory
        return out

    def limits(self) -> dict[str, str]:
        """Kubernetes resource limits: CPU and memory when planned, ``nvidia.com/gpu`` when the
        worker uses GPUs."""
        out = {}
        if self.cpu_limit is not None:
            out["cpu"] = self.cpu_limit
        if self.memory_limit is not None:
            out["memory"] = self.memory_limit
        if self.gpus > 0:
            out[GPU_RESOURCE] = str(self.gpus)
        return out


@dataclass(frozen=True)
class SchedulingPlan:
    """Where a worker may run (``spec.scheduling``), in a Pod spec's own field names."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None

    def pod_fields(self) -> dict[str, Any]:
        """``nodeSelector``, ``tolerations``, ``affinity``, ``priorityClassName``: those set."""
        fields = {
            "nodeSelector": self.node_selector,
            "tolerations": self.tolerations,
            "affinity": self.affinity,
            "priorityClassName": self.priority_class_name,
        }
        return {key: value for key, value in fields.items() if value}


@dataclass
class WorkerPlan:
    """One replica's worker: the ``kubechat worker`` arguments its deployment defines (see
    :func:`worker_command_args` for a whole command line) and what it needs. With ``vllm`` set
    (``spec.engine: vllm``) vLLM's server serves and ``args`` are ``kubechat agent``'s."""

    deployment: str
    replica: int
    args: list[str]
    env: dict[str, str]
    resources: ResourcePlan
    volumes: list[VolumePlan]
    model_names: list[str]
    template_hash: str
    namespace: str | None = None
    scheduling: SchedulingPlan = field(default_factory=SchedulingPlan)
    vllm: VllmServerPlan | None = None


@dataclass(frozen=True)
class WorkerLaunch:
    """What the renderer of a plan decides for one worker: where it listens and how it keeps its
    lease. The operator launches into pods, ``kubechat up`` into local processes."""

    host: str
    port: int
    lease_store: str  # ``--lease-store``: ``kubernetes``, ``local:DIR``
    name: str | None = None  # the lease's name (None: the worker's default, $POD_NAME in a pod)
    lease_renew_interval: float | None = None  # None: the worker's default (kubechat.defaults)
    lease_duration: float | None = None
    drain_grace: float | None = None


def worker_command_args(worker: WorkerPlan, launch: WorkerLaunch) -> list[str]:
    """The arguments of ``kubechat worker`` (after the subcommand) for one planned worker: what
    the deployment defines (``worker.args``), then where and how this copy of it runs."""
    args = [*worker.args, "--host", launch.host, "--port", str(launch.port)]
    args += ["--lease-store", launch.lease_store]
    if launch.name is not None:
        args += ["--worker-name", launch.name]
    for flag, seconds in (
        ("--lease-renew-interval", launch.lease_renew_interval),
        ("--lease-duration", launch.lease_duration),
        ("--drain-grace", launch.drain_grace),
    ):
        if seconds is not None:
            args += [flag, f"{seconds:g}"]
    return args


@dataclass
class DeploymentPlan:
    """Every worker of a deployment; ``template_hash`` changes when the worker definition does."""

    deployment: str
    namespace: str | None
    replicas: int
    template_hash: str
    model_names: list[str]
    workers: list[WorkerPlan] = field(default_factory=list)


def _gpu_memory_flag(value: str) -> str:
    """``20Gi`` -> ``20GiB`` (the spelling accelerate parses); other forms unchanged."""
    return value + "B" if re.search(r"[KMGT]i$", value) else value


def _deployment_args(md: ModelDeployment) -> list[str]:
    """The ``kubechat worker`` flags (FastChat's names) a deployment defines; the template hash
    covers them. :func:`worker_command_args` adds those of each launch."""
    model, res, worker = md.spec.model, md.spec.resources, md.spec.worker
    args = ["--model-path", model.path, "--model-names", ",".join(md.model_names)]
    if model.revision:
        args += ["--revision", model.revision]
    args += ["--dtype", model.dtype]
    if model.conv_template:
        args += ["--conv-template", model.conv_template]
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    args += ["--num-gpus", str(res.gpus)]
    if res.gpus == 0:
        args += ["--device", "cpu"]
    if res.max_gpu_memory:
        args += ["--max-gpu-memory", _gpu_memory_flag(res.max_gpu_memory)]
    args += ["--limit-worker-concurrency", str(worker.limit_concurrency)]
    if worker.stream_interval is not None:
        args += ["--stream-interval", str(worker.stream_interval)]
    args += ["--deployment", md.name]
    return args


def worker_env(md: ModelDeployment, volumes: list[VolumePlan]) -> dict[str, str]:
    """Environment of each worker; ``spec.worker.env`` wins over what the plan sets."""
    env: dict[str, str] = {}
    if volumes:
        # The volume is mounted read-only: the hub cache there is used as is, never written.
        env["HF_HOME"] = volumes[0].hub_cache
        env["HF_HUB_OFFLINE"] = "1"
    env.update(md.spec.worker.env)
    return env


def _hash(template: dict) -> str:
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def scheduling_plan(md: ModelDeployment) -> SchedulingPlan:
    """``spec.scheduling`` as Pod spec fields (nothing set: an empty plan)."""
    scheduling = md.spec.scheduling.model_dump(by_alias=True, exclude_none=True, mode="json")
    return SchedulingPlan(
        node_selector=scheduling.get("nodeSelector") or {},
        tolerations=scheduling.get("tolerations") or [],
        affinity=scheduling.get("affinity") or {},
        priority_class_name=scheduling.get("priorityClassName"),
    )


def _template(
    args: list[str],
    env: dict[str, str],
    resources: ResourcePlan,
    volumes: list[VolumePlan],
    scheduling: SchedulingPlan,
    vllm: VllmServerPlan | None = None,
) -> dict[str, Any]:
    """What ``template_hash`` covers. Fields added since v1alpha1's first release count only
    once set, so an operator upgrade does not roll pods whose rendering it did not change."""
    template: dict[str, Any] = {
        "args": args,
        "env": env,
        "resources": {
            k: v
            for k, v in asdict(resources).items()
            if v is not None or k not in ("cpu_limit", "memory_limit")
        },
        "volumes": [asdict(v) for v in volumes],
    }
    if scheduling.pod_fields():
        template["scheduling"] = scheduling.pod_fields()
    if vllm is not None:
        template["vllm"] = asdict(vllm)
    return template


def plan_deployment(md: ModelDeployment) -> DeploymentPlan:
    """Plan one worker per replica; replicas alone never change ``template_hash``."""
    storage, res = md.spec.storage, md.spec.resources
    volumes = []
    if storage.persistent_volume_claim:
        volumes.append(VolumePlan(storage.persistent_volume_claim, storage.mount_path))
    resources = ResourcePlan(
        gpus=res.gpus,
        cpu=res.cpu,
        memory=res.memory,
        cpu_limit=res.cpu_limit,
        memory_limit=res.memory_limit or res.memory,
    )
    scheduling = scheduling_plan(md)
    vllm = vllm_server_plan(md) if md.spec.engine == "vllm" else None
    args = agent_args(md) if vllm else _deployment_args(md)
    env = worker_env(md, volumes)
    template_hash = _hash(_template(args, env, resources, volumes, scheduling, vllm))
    workers = [
        WorkerPlan(
            deployment=md.name,
            namespace=md.namespace,
            replica=i,
            args=list(args),
            env=dict(env),
            resources=resources,
            volumes=list(volumes),
            model_names=md.model_names,
            template_hash=template_hash,
            scheduling=scheduling,
            vllm=vllm,
        )
        for i in range(md.spec.replicas)
    ]
    return DeploymentPlan(
        deployment=md.name,
        namespace=md.namespace,
        replicas=md.spec.replicas,
        template_hash=template_hash,
        model_names=md.model_names,
        workers=workers,
    )
