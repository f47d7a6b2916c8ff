"""What a vLLM deployment plans: the spec's checks, vLLM's flags (read back by vLLM's own parser),
the agent's flags (read back by ours)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from kubechat.manifests import load_manifests
from kubechat.plan import WorkerLaunch, plan_deployment, worker_command_args
from kubechat.spec import SpecError, parse_model_deployment
from kubechat.vllm_plan import GPU_SHARE_LAUNCHER, VLLM_SERVER_MODULE

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "baichuan-vllm.yaml"


def deployment(**spec: object) -> dict:
    body = {"engine": "vllm", "model": {"path": "org/model"}, **spec}
    return {
        "apiVersion": "kubechat.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": body,
    }


def errors(obj: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_model_deployment(obj)
    return info.value.errors


def test_engine_defaults_to_kubechat_own() -> None:
    md = parse_model_deployment({**deployment(), "spec": {"model": {"path": "org/model"}}})
    assert md.spec.engine == "transformers"
    (worker,) = plan_deployment(md).workers
    assert worker.vllm is None and "--model-path" in worker.args


def test_tensor_parallel_size_must_divide_the_gpus() -> None:
    bad = deployment(resources={"gpus": 4}, vllm={"tensorParallelSize": 3})
    assert errors(bad) == [
        (
            "spec.vllm.tensorParallelSize",
            "must divide resources.gpus (4): 3 does not (the GPUs a layer is split over, times "
            "the pipeline stages, are the pod's GPUs)",
        )
    ]


@pytest.mark.parametrize(
    ("spec", "path", "says"),
    [
        ({"engine": "transformers", "vllm": {}}, "spec.vllm", "applies with engine: vllm only"),
        ({"vllm": {"extraArgs": ["--port=9000"]}}, "spec.vllm.extraArgs[0]", "--port is set"),
        ({"model": {"path": "kubechat:demo"}}, "spec.model.path", "kubechat:demo is built"),
        ({"model": {"path": "m", "convTemplate": "chatml"}}, "spec.model.convTemplate", "vLLM"),
        ({"vllm": {"tensorParallelSize": 2}}, "spec.vllm.tensorParallelSize", "needs GPUs"),
        ({"vllm": {"gpuMemoryUtilization": 1.5}}, "spec.vllm.gpuMemoryUtilization", "<= 1"),
    ],
)
def test_invalid_vllm_specs_name_their_field(spec: dict, path: str, says: str) -> None:
    found = errors(deployment(**spec))
    assert [p for p, _ in found] == [path]
    assert says in found[0][1]


def test_gpus_beyond_the_tensor_parallel_size_run_pipeline_stages() -> None:
    md = parse_model_deployment(deployment(resources={"gpus": 4}, vllm={"tensorParallelSize": 2}))
    args = plan_deployment(md).workers[0].vllm.args
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"


def test_the_vllm_spec_changes_the_template_hash() -> None:
    one = plan_deployment(parse_model_deployment(deployment()))
    other = plan_deployment(parse_model_deployment(deployment(vllm={"maxModelLen": 1024})))
    assert one.template_hash != other.template_hash


def test_agent_flags_parse_with_the_agents_parser() -> None:
    from kubechat.agent.command import configure

    (md,) = load_manifests([EXAMPLE])
    (worker,) = plan_deployment(md).workers
    launch = WorkerLaunch("0.0.0.0", 8001, "kubernetes", drain_grace=30)
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(worker_command_args(worker, launch))
    assert (args.engine, args.model_names, args.capacity) == ("vllm", "baichuan-13b-chat", 64)
    assert (args.deployment, args.lease_store, args.port) == (md.name, "kubernetes", 8001)


def test_example_flags_parse_with_vllms_own_parser(vllm_python: Path) -> None:
    """examples/baichuan-vllm.yaml (2 GPUs, tensor parallel 2, maxGpuMemory 20GiB): the launcher
    form, whose flags vLLM's own parser must take."""
    (md,) = load_manifests([EXAMPLE])
    (worker,) = plan_deployment(md).workers
    argv = worker.vllm.argv("python3", "0.0.0.0", 8000, drain_grace=30)
    assert argv[:5] == ["python3", "-c", GPU_SHARE_LAUNCHER, str(20 * 2**30), VLLM_SERVER_MODULE]
    reader = (
        "import json, sys\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "a = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])\n"
        "print(json.dumps({k: getattr(a, k) for k in ('model', 'served_model_name', 'dtype',\n"
        "  'trust_remote_code', 'tensor_parallel_size', 'max_model_len', 'max_num_seqs',\n"
        "  'port', 'shutdown_timeout')}))\n"
    )
    done = subprocess.run(
        [str(vllm_python), "-c", reader, *argv[5:]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == {
        "model": "baichuan-inc/Baichuan-13B-Chat",
        "served_model_name": ["baichuan-13b-chat"],
        "dtype": "float16",
        "trust_remote_code": True,
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "max_num_seqs": 64,
        "port": 8000,
        "shutdown_timeout": 30,
    }


def test_gpu_share_launcher_refuses_to_guess_without_a_gpu(vllm_python: Path) -> None:
    """The launcher runs in vLLM's environment; with no GPU it cannot size the share and says
    so instead of starting vLLM with a made-up one."""
    done = subprocess.run(
        [str(vllm_python), "-c", GPU_SHARE_LAUNCHER, str(20 * 2**30), VLLM_SERVER_MODULE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 1
    assert "kubechat: maxGpuMemory is set but no GPU is visible" in done.stderr
