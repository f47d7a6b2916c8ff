"""The ModelDeployment resource: pydantic models, defaults and validation with field paths.

These models are the contract: ``crds/modeldeployment.yaml`` (and the chart's copy) is generated
from them by ``python -m kubechat.crd``, field descriptions included (what ``kubectl explain``
shows). A new field is a field here, then the generator run. Field names are camelCase in YAML
(the aliases); Python code uses the snake_case attributes.
"""

from __future__ import annotations

import difflib
import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .defaults import DEPLOYMENT_LIMIT_CONCURRENCY

GROUP = "kubechat.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

DEMO_MODEL_PATH = "kubechat:demo"
DTYPES = ("auto", "float16", "bfloat16", "float32")

# Patterns (the generated CRD carries them, so the API server checks them too).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX = 253
# Per-GPU memory in the forms FastChat and accelerate take: 20GiB, 20Gi, 20GB, 500MiB, 1.5TiB.
GPU_MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?([KMGT]iB?|[KMGT]B)$"
# A Kubernetes resource quantity without exponent forms: 500m, 2, 0.5, 8Gi, 16G.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE])?$"
# Served model names travel comma-joined in --model-names: no commas, no whitespace.
MODEL_NAME_PATTERN = r"^[^\s,]+$"
CONV_TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MOUNT_PATH_PATTERN = r"^/.*[^/]$"


def is_demo_model(path: str) -> bool:
    """Whether ``path`` names the built-in demo model (built by the worker on first use)."""
    return path.strip() == DEMO_MODEL_PATH


def is_relative_path(path: str) -> bool:
    """Whether ``path`` is written relative to a folder (``./model``, ``../models/x``): only a
    manifest file gives it one, so ``kubechat up`` resolves it and a cluster refuses it."""
    return path.strip().split("/", 1)[0] in (".", "..")


class SpecError(ValueError):
    """An invalid ModelDeployment; ``errors`` holds ``(field path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(f"{path or '(root)'}: {message}" for path, message in errors))


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, for error messages."""
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value)
    return f"a {type(value).__name__}"


def _pattern(
    pattern: str, what: str, max_length: int | None = None, description: str | None = None
) -> Any:
    """A string check with a readable message; the pattern (and ``description``) also appear in
    the JSON schema."""

    def check(value: str) -> str:
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters (got {len(value)})")
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what} (got {_show(value)})")
        return value

    extra: dict[str, Any] = {"pattern": pattern}
    if max_length is not None:
        extra["maxLength"] = max_length
    if description is not None:
        extra["description"] = description
    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", **extra})]


def _quantity_text(value: Any) -> Any:
    """Accept ``cpu: 2`` as Kubernetes does (int-or-string) and keep it as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


DnsLabel = _pattern(
    DNS_LABEL_PATTERN,
    "a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric)",
    DNS_LABEL_MAX,
)
DnsSubdomain = _pattern(
    DNS_SUBDOMAIN_PATTERN,
    "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
    DNS_SUBDOMAIN_MAX,
)
GpuMemory = _pattern(GPU_MEMORY_PATTERN, "a memory size such as 20GiB, 20Gi or 500MiB")
Quantity = Annotated[
    _pattern(QUANTITY_PATTERN, "a Kubernetes quantity such as 500m, 2 or 8Gi"),
    BeforeValidator(_quantity_text),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
ModelName = _pattern(
    MODEL_NAME_PATTERN,
    "a name without commas or whitespace",
    description="A served model name, without commas or whitespace.",
)
EnvName = _pattern(ENV_NAME_PATTERN, "an environment variable name")
TemplateName = _pattern(CONV_TEMPLATE_PATTERN, "a template name such as chatml")
MountPath = _pattern(MOUNT_PATH_PATTERN, "an absolute path such as /models")
EnvValue = Annotated[str, Field(description="The value of one environment variable.")]
NodeLabelValue = Annotated[str, Field(description="The value the node label must have.")]


class _Strict(BaseModel):
    """Strict (YAML types as the CRD sees them), camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ObjectMeta(BaseModel):
    """The part of ``metadata`` we use; the API server's own fields (uid, ...) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    name: DnsLabel = Field(description="Name of the deployment, a DNS-1123 label.")
    namespace: DnsLabel | None = Field(default=None, description="Namespace (default: default).")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the resource.")


class ModelSource(_Strict):
    """``spec.model``: which checkpoint to load and how."""

    path: Annotated[str, Field(min_length=1)] = Field(
        description="A hub id (baichuan-inc/Baichuan-13B-Chat), a directory (for example under the "
        "storage mount: /models/my-model), or kubechat:demo for the built-in demo model. A path "
        "relative to the manifest's folder (./my-model) is for kubechat up; a cluster refuses it."
    )
    names: list[ModelName] | None = Field(
        default=None,
        min_length=1,
        description="Model names served on /v1/models and accepted in requests (default: the "
        "deployment's metadata.name).",
    )
    trust_remote_code: bool = Field(
        default=False,
        alias="trustRemoteCode",
        description="Run the Python code shipped with the checkpoint (auto_map in config.json), "
        "as Baichuan needs. Off by default: only for trusted models.",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto",
        description="Weight dtype; auto takes the checkpoint's torch_dtype on GPU and float32 on "
        "CPU.",
    )
    conv_template: TemplateName | None = Field(
        default=None,
        alias="convTemplate",
        description="Prompt template override (baichuan, llama-2, vicuna, chatml, raw). Default: "
        "the tokenizer's chat_template, then a built-in guessed from the model.",
        json_schema_extra={"nullable": True},  # `convTemplate: null` (or empty) means unset
    )
    revision: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Hub revision to load - a branch, tag or commit hash."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSource:
        if self.names is not None:
            seen = [n for i, n in enumerate(self.names) if n in self.names[:i]]
            if seen:
                raise ValueError(f"names: must be unique ({', '.join(sorted(set(seen)))} repeated)")
        return self

    @model_validator(mode="after")
    def _no_relative_path(self) -> ModelSource:
        # kubechat up turns ./x into an absolute path before validation (kubechat/manifests.py);
        # what reaches here relative came without a folder, as in a cluster
        if is_relative_path(self.path):
            raise ValueError(
                f"path: {self.path} is relative, and only kubechat up has a folder to read it "
                "from (the manifest's): give an absolute path (on a volume, under "
                "spec.storage.mountPath) or a hub id"
            )
        return self


class StorageSpec(_Strict):
    """``spec.storage``: the volume holding model files and the hub cache."""

    persistent_volume_claim: DnsSubdomain | None = Field(
        default=None,
        alias="persistentVolumeClaim",
        description="Name of a PersistentVolumeClaim in the same namespace, mounted read-only at "
        "mountPath; HF_HOME points at mountPath/huggingface.",
    )
    mount_path: MountPath = Field(
        default="/models",
        alias="mountPath",
        description="Where the volume is mounted in each worker.",
    )


class ResourcesSpec(_Strict):
    """``spec.resources``: what one replica gets."""

    gpus: int = Field(
        default=0, ge=0, description="GPUs per replica (the nvidia.com/gpu limit); 0 runs on CPU."
    )
    max_gpu_memory: GpuMemory | None = Field(
        default=None,
        alias="maxGpuMemory",
        description="Memory cap per GPU for the weights, like FastChat's --max-gpu-memory (20GiB, "
        "20Gi, 500MiB); applies with one GPU too. Needs gpus >= 1.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request per replica (500m, 2).")
    memory: Quantity | None = Field(default=None, description="Memory request per replica (32Gi).")
    cpu_limit: Quantity | None = Field(
        default=None,
        alias="cpuLimit",
        description="CPU limit per replica, at least cpu. Unset by default: a CPU limit throttles "
        "token generation whenever the worker could use an idle core.",
    )
    memory_limit: Quantity | None = Field(
        default=None,
        alias="memoryLimit",
        description="Memory limit per replica, at least memory (default: the memory request, so "
        "a worker that outgrows it is OOMKilled and reported instead of pressing its node's "
        "other pods).",
    )


class WorkerSpec(_Strict):
    """``spec.worker``: serving knobs of each worker."""

    limit_concurrency: int = Field(
        default=DEPLOYMENT_LIMIT_CONCURRENCY,
        ge=1,
        alias="limitConcurrency",
        description="Requests served at once per worker, like FastChat's "
        "--limit-worker-concurrency; excess requests get HTTP 429, never lost.",
    )
    stream_interval: int | None = Field(
        default=None,
        ge=1,
        alias="streamInterval",
        description="Tokens per streamed chunk (the worker's default when unset).",
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        description="Extra environment variables for each worker (name to value); they win "
        "over the ones kubechat sets.",
    )


# A Kubernetes type kept as given (the API server and the kubelet check it, not us).
KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class Toleration(_Strict):
    """One toleration of worker pods, as in a Pod's ``spec.tolerations``."""

    key: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Taint key (every key when unset, with operator Exists)."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists, or Equal (the default) to match value too."
    )
    value: str | None = Field(
        default=None, description="Taint value to match (operator Equal only)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate (every effect when unset)."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        alias="tolerationSeconds",
        description="How long a NoExecute taint is tolerated before the pod is evicted (forever "
        "when unset).",
        json_schema_extra={"format": "int64"},
    )


TolerationItem = Annotated[
    Toleration, Field(description="One toleration, as in a Pod's spec.tolerations.")
]


class AffinitySpec(_Strict):
    """``spec.scheduling.affinity``: a Pod's affinity, each part as Kubernetes defines it."""

    node_affinity: KubeObject | None = Field(
        default=None,
        alias="nodeAffinity",
        description="A core/v1 NodeAffinity (requiredDuringSchedulingIgnoredDuringExecution, "
        "preferredDuringSchedulingIgnoredDuringExecution).",
    )
    pod_affinity: KubeObject | None = Field(
        default=None, alias="podAffinity", description="A core/v1 PodAffinity."
    )
    pod_anti_affinity: KubeObject | None = Field(
        default=None,
        alias="podAntiAffinity",
        description="A core/v1 PodAntiAffinity, e.g. to spread replicas over nodes.",
    )


class SchedulingSpec(_Strict):
    """``spec.scheduling``: where worker pods may run and how they rank for preemption."""

    node_selector: dict[str, NodeLabelValue] | None = Field(
        default=None,
        alias="nodeSelector",
        description="Labels a worker's node must have, e.g. nvidia.com/gpu.product: "
        "NVIDIA-A100-SXM4-80GB.",
    )
    tolerations: list[TolerationItem] | None = Field(
        default=None, description="Taints worker pods tolerate, e.g. those of dedicated GPU nodes."
    )
    affinity: AffinitySpec | None = Field(
        default=None, description="Node and pod affinity of worker pods, as in a Pod spec."
    )
    priority_class_name: DnsSubdomain | None = Field(
        default=None,
        alias="priorityClassName",
        description="PriorityClass of worker pods: their scheduling order and whether they may "
        "preempt lower-priority pods.",
    )


class AutoscalingSpec(_Strict):
    """``spec.autoscaling``: replicas follow the load the workers report in their leases."""

    min_replicas: int = Field(
        default=1,
        ge=0,
        alias="minReplicas",
        description="Fewest workers. 0 lets an idle deployment stop every worker: the next "
        "request waits in the gateway while one starts.",
    )
    max_replicas: int = Field(
        ge=1, alias="maxReplicas", description="Most workers, at least minReplicas."
    )
    target_requests: int = Field(
        default=16,
        ge=1,
        alias="targetRequests",
        description="Requests per worker (in flight plus queued, averaged over windowSeconds) "
        "the autoscaler aims at: replicas = ceil(average load / targetRequests).",
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        alias="scaleDownDelaySeconds",
        description="Seconds the load must keep asking for fewer workers before one is "
        "removed (the least loaded, after its requests finish). Scaling up is immediate.",
    )
    window_seconds: int = Field(
        default=60,
        ge=1,
        alias="windowSeconds",
        description="Time constant of the load average: a short burst counts for less than "
        "load that lasts.",
    )


VllmArg = Annotated[
    str, Field(description="One vLLM server flag or value, as on its command line.")
]


class VllmSpec(_Strict):
    """``spec.vllm``: how vLLM serves the model when ``spec.engine`` is vllm."""

    image: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="vLLM's container image (default: the operator's, pinned by digest in the "
        "chart's values); its own OpenAI server runs unmodified.",
    )
    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        alias="tensorParallelSize",
        description="GPUs each layer is split over (default: resources.gpus). It must divide "
        "resources.gpus; the rest of the GPUs run pipeline stages.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        ge=0.01,
        le=1,
        alias="gpuMemoryUtilization",
        description="Share of each GPU's memory vLLM takes (weights, activations, KV cache). "
        "Default: resources.maxGpuMemory over the GPU's memory when maxGpuMemory is set, "
        "worked out when the pod starts; else vLLM's own default.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=1,
        alias="maxModelLen",
        description="Longest context (prompt plus output) in tokens (default: the model's).",
    )
    extra_args: list[VllmArg] = Field(
        default_factory=list,
        alias="extraArgs",
        description="More vLLM server flags, appended as given (e.g. --enable-prefix-caching).",
    )


class ModelDeploymentSpec(_Strict):
    """``spec``: the desired state."""

    model: ModelSource = Field(description="The checkpoint to serve and how to load it.")
    storage: StorageSpec = Field(
        default_factory=StorageSpec,
        description="The volume that holds model files and the Hugging Face hub cache.",
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="What each replica gets."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        description="Number of workers; also settable with kubectl scale. Ignored while "
        "autoscaling is set (an Event says so).",
    )
    worker: WorkerSpec = Field(
        default_factory=WorkerSpec, description="Serving settings of each worker."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Where worker pods may run, as in a Pod spec."
    )
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="What serves the model: transformers (kubechat's own worker: any checkpoint "
        "transformers loads, remote code included) or vllm (vLLM's OpenAI server with a "
        "kubechat agent beside it: paged attention, tensor parallelism).",
    )
    vllm: VllmSpec | None = Field(default=None, description="vLLM's settings (engine: vllm only).")
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Scale the workers with their load, down to zero when minReplicas is 0; "
        "replaces replicas while set (status.desiredReplicas shows the decision).",
    )


class ModelDeployment(_Strict):
    """A validated ModelDeployment (``status`` is dropped on input)."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "ModelDeployment serves one large language model with kubechat "
            "workers: an OpenAI-compatible API per worker, found by the gateway through "
            "heartbeat Leases."
        },
    )

    api_version: Literal["kubechat.dev/v1alpha1"] = Field(
        alias="apiVersion", description="APIVersion of this object, kubechat.dev/v1alpha1."
    )
    kind: Literal["ModelDeployment"] = Field(description="Kind of this object, ModelDeployment.")
    metadata: ObjectMeta = Field(
        description="Standard object metadata; the name is also the default served model name."
    )
    spec: ModelDeploymentSpec = Field(
        description="The desired state - which model, on what, how many workers."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" in data:
            data = {k: v for k, v in data.items() if k != "status"}
        return data

    @model_validator(mode="after")
    def _default_names(self) -> ModelDeployment:
        if self.spec.model.names is None:
            model = self.spec.model.model_copy(update={"names": [self.metadata.name]})
            spec = self.spec.model_copy(update={"model": model})
            object.__setattr__(self, "spec", spec)
        return self

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        """``metadata.namespace`` (None when the manifest leaves it to the client)."""
        return self.metadata.namespace

    @property
    def model_names(self) -> list[str]:
        """The names served on /v1/models (defaulted to ``[metadata.name]``)."""
        return list(self.spec.model.names or [self.metadata.name])

    def to_dict(self) -> dict[str, Any]:
        """The resource as YAML/JSON data, camelCase, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _field_names_at(loc: tuple[Any, ...]) -> list[str]:
    """The YAML field names allowed in the object at ``loc`` (for "did you mean")."""
    model: Any = ModelDeployment
    for part in loc:
        if not isinstance(part, str):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if field is None:
            return []
        inner = field.annotation
        for candidate in getattr(inner, "__args__", (inner,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _show(error.get("input"))
    loc = error["loc"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        known = _field_names_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
        return f"unknown field ({hint})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}.get(
            kind, "<"
        )
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound} (got {got})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {got})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer (got {got})"
    if kind == "bool_type":
        return f"must be true or false (got {got})"
    if kind == "string_type":
        return f"must be a string (got {got}; quote it in YAML)"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {got})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {got})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return "must have at least one item (or be left out)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {got})"


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_QUANTITY_UNITS = {
    "": 1,
    "m": Decimal("0.001"),
    **{suffix: 1000 ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": 1024 ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}


def quantity_value(text: str) -> Decimal:
    """A Kubernetes quantity (as QUANTITY_PATTERN admits it) as a number: ``8Gi`` -> 8589934592."""
    number = re.match(r"^[0-9.]+", text)
    if number is None:
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(number.group()) * _QUANTITY_UNITS[text[number.end() :]]


def _cross_checks(md: ModelDeployment) -> list[tuple[str, str]]:
    """Rules that span fields (the CRD schema cannot express them)."""
    problems = []
    res = md.spec.resources
    if res.max_gpu_memory is not None and res.gpus == 0:
        problems.append(
            ("spec.resources.maxGpuMemory", "is a per-GPU cap: set gpus >= 1 or remove it")
        )
    for request, limit, field in (
        (res.cpu, res.cpu_limit, "cpuLimit"),
        (res.memory, res.memory_limit, "memoryLimit"),
    ):
        if request and limit and quantity_value(limit) < quantity_value(request):
            what = field.removesuffix("Limit")
            problems.append(
                (f"spec.resources.{field}", f"must be at least {what} ({request}), got {limit}")
            )
    scaling = md.spec.autoscaling
    if scaling is not None and scaling.min_replicas > scaling.max_replicas:
        problems.append(
            (
                "spec.autoscaling.maxReplicas",
                f"must be at least minReplicas ({scaling.min_replicas}), "
                f"got {scaling.max_replicas}",
            )
        )
    problems += _engine_checks(md)
    for i, toleration in enumerate(md.spec.scheduling.tolerations or []):
        where = f"spec.scheduling.tolerations[{i}]"
        if toleration.operator == "Exists" and toleration.value:
            problems.append((f"{where}.value", "must be empty with operator Exists"))
        if toleration.key is None and toleration.operator != "Exists":
            problems.append((f"{where}.operator", "must be Exists when no key is given"))
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            problems.append((f"{where}.tolerationSeconds", "needs effect NoExecute"))
    return problems


def _engine_checks(md: ModelDeployment) -> list[tuple[str, str]]:
    """What only one engine understands, and vLLM's parallelism over the pod's GPUs."""
    spec = md.spec
    if spec.engine != "vllm":
        if spec.vllm is not None:
            return [("spec.vllm", "applies with engine: vllm only (set engine: vllm or remove it)")]
        return []
    problems = []
    if is_demo_model(spec.model.path):
        problems.append(
            (
                "spec.model.path",
                "kubechat:demo is built for kubechat's own worker: with engine: vllm give a hub "
                "id or a directory",
            )
        )
    if spec.model.conv_template is not None:
        problems.append(
            (
                "spec.model.convTemplate",
                "is kubechat's own worker's: vLLM takes the tokenizer's chat template (pass "
                "--chat-template in spec.vllm.extraArgs to override it)",
            )
        )
    if spec.worker.stream_interval is not None:
        problems.append(
            ("spec.worker.streamInterval", "is kubechat's own worker's: vLLM streams every token")
        )
    vllm = spec.vllm or VllmSpec()
    gpus = spec.resources.gpus
    tp = vllm.tensor_parallel_size
    if tp is not None and gpus and gpus % tp:
        problems.append(
            (
                "spec.vllm.tensorParallelSize",
                f"must divide resources.gpus ({gpus}): {tp} does not (the GPUs a layer is split "
                "over, times the pipeline stages, are the pod's GPUs)",
            )
        )
    if tp is not None and not gpus and tp > 1:
        problems.append(
            (
                "spec.vllm.tensorParallelSize",
                f"is {tp} with resources.gpus 0: splitting layers needs GPUs (set gpus)",
            )
        )
    for i, arg in enumerate(vllm.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in VLLM_PLANNED_FLAGS:
            problems.append(
                (
                    f"spec.vllm.extraArgs[{i}]",
                    f"{flag} is set by kubechat from {VLLM_PLANNED_FLAGS[flag]}: set it there",
                )
            )
    return problems


# vLLM flags the plan writes from the spec (or the launch): extraArgs may not repeat them.
VLLM_PLANNED_FLAGS = {
    "--model": "spec.model.path",
    "--served-model-name": "spec.model.names",
    "--dtype": "spec.model.dtype",
    "--revision": "spec.model.revision",
    "--trust-remote-code": "spec.model.trustRemoteCode",
    "--tensor-parallel-size": "spec.vllm.tensorParallelSize",
    "--pipeline-parallel-size": "resources.gpus / spec.vllm.tensorParallelSize",
    "--gpu-memory-utilization": "spec.vllm.gpuMemoryUtilization",
    "--max-model-len": "spec.vllm.maxModelLen",
    "--max-num-seqs": "spec.worker.limitConcurrency",
    "--host": "the pod or kubechat up",
    "--port": "the pod or kubechat up",
    "--shutdown-timeout": "the drain grace",
}


def parse_model_deployment(obj: Any) -> ModelDeployment:
    """Validate a ModelDeployment given as YAML/JSON data; raises SpecError naming field paths."""
    if not isinstance(obj, dict):
        raise SpecError([("", f"must be a mapping (got {_show(obj)})")])
    try:
        md = ModelDeployment.model_validate(obj)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = _message(error)
            # A model-level check names its field first ("names: ..."): move it to the path.
            if error["type"] == "value_error" and re.match(r"^\w+: ", message):
                field, message = message.split(": ", 1)
                loc = (*loc, field)
            if loc and loc[-1] == "[key]":  # a bad key of a mapping such as worker.env
                message = f"key {_show(loc[-2])}: {message}"
                loc = loc[:-2]
            errors.append((_path(loc), message))
        raise SpecError(errors) from None
    problems = _cross_checks(md)
    if problems:
        raise SpecError(problems)
    return md
