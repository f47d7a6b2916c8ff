"""The chart guide (README "Kubernetes" up to "Without Helm", docs/helm.md) on the Kubernetes API
emulator. ``helm install`` needs a real API server, so the chart is installed the way the
README's (marked) command would install it: the same command as ``helm template``, applied with
kubectl, and the operator Deployment's rendered command line started (its default ports, the
release namespace ``kubechat``), with the test kubelet running the chart's demo model on a node
without GPUs. Then the guide's other commands run as written (tests/docs/guide.py checks them).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from tests.chart.chart_tools import CHART, container_command
from tests.docs.commands import Snippet, all_snippets, scenario_of, shell_commands
from tests.docs.guide import Guide, guide_steps, run_guide
from tests.docs.shell import DocShell, documented_ports
from tests.support.kube_server import kubernetes_client, running_emulator
from tests.support.kube_tools import run_kubectl
from tests.support.pod_runner import PodRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
NAMESPACE = "kubechat"


def chart_snippets() -> list[Snippet]:
    """The chart guide's snippets, in reading order (marked ones included)."""
    return [s for s in all_snippets() if scenario_of(s) == "chart"]


def helm_install() -> str:
    """The README's ``helm install`` command."""
    (command,) = [
        c
        for s in chart_snippets()
        if s.path == "README.md"
        for c in shell_commands(s.text)
        if c.startswith("helm install ")
    ]
    return command


def as_template(command: str) -> str:
    """``helm install ARGS`` as ``helm template ARGS``: the same release, rendered."""
    words = shlex.split(command)
    assert words[:2] == ["helm", "install"], command
    return shlex.join(["helm", "template", *words[2:]])


def test_the_chart_guide_runs_as_written(demo_model_dir: Path, tmp_path: Path) -> None:
    install = helm_install()
    assert f"--namespace {NAMESPACE}" in install
    commands = guide_steps(chart_snippets())
    assert commands, "the chart guide has no command to run"
    with (
        documented_ports(),
        running_emulator(
            crds=[CHART / "crds" / "modeldeployment.yaml"],
            namespaces=("default", NAMESPACE),
            directory=tmp_path / "api",
        ) as emulator,
        PodRunner(
            emulator.kubeconfig,
            NAMESPACE,
            path_map={"/var/cache/kubechat": str(demo_model_dir.parent)},
            log_dir=tmp_path / "pods",
            stop_grace=10.0,
            gpus=0,
        ),
        DocShell(
            tmp_path, env={"KUBECONFIG": str(emulator.kubeconfig), "POD_NAMESPACE": NAMESPACE}
        ) as shell,
    ):
        rendered = shell.run(as_template(install))
        # the emulator has no schemas for built-in kinds: --validate=false for this setup step
        run_kubectl(emulator.kubeconfig, "apply", "--validate=false", "-f", "-", input=rendered)
        docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
        shell.start(shlex.join(container_command(docs, "operator")))
        guide = Guide(shell, kubernetes_client(emulator.kubeconfig), NAMESPACE)
        guide.demo_ready()  # what the README's `kubectl get md -n kubechat -w` waits for
        run_guide(guide, commands)
