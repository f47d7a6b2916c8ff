"""The cluster guide without Helm (README "Without Helm", docs/kubernetes.md), run as written on
the Kubernetes API emulator: real kubectl, ``kubechat operator`` started exactly as documented
(cluster-wide, default ports), the test kubelet running the worker pods on a node without GPUs,
and the documented gateways and chat page.

The commands run in reading order, each followed by what a reader would wait for or look at
(tests/docs/guide.py); deletions run last, since the docs describe ``kubectl delete md demo``
before commands that read the deployment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.commands import Snippet, all_snippets, scenario_of, shell_commands
from tests.docs.guide import Guide, run_guide
from tests.docs.shell import DocShell, documented_ports
from tests.support.kube_server import kubernetes_client, running_emulator
from tests.support.pod_runner import PodRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def cluster_commands() -> list[tuple[Snippet, str]]:
    """The guide's commands in reading order, deletions moved to the end."""
    snippets = [s for s in all_snippets() if scenario_of(s) == "cluster" and s.not_run is None]
    commands = [(s, c) for s in snippets for c in shell_commands(s.text)]
    deletion = lambda c: c.startswith("kubectl delete ")  # noqa: E731
    return [x for x in commands if not deletion(x[1])] + [x for x in commands if deletion(x[1])]


def test_the_cluster_guide_runs_as_written(demo_model_dir: Path, tmp_path: Path) -> None:
    commands = cluster_commands()
    assert any(c.startswith("kubechat operator") and "--namespace" not in c for _, c in commands)
    with (
        documented_ports(),
        running_emulator(directory=tmp_path / "api") as emulator,
        PodRunner(
            emulator.kubeconfig,
            "default",
            path_map={"/var/cache/kubechat": str(demo_model_dir.parent)},
            log_dir=tmp_path / "pods",
            stop_grace=10.0,
            gpus=0,
        ),
        DocShell(tmp_path, env={"KUBECONFIG": str(emulator.kubeconfig)}) as shell,
    ):
        run_guide(Guide(shell, kubernetes_client(emulator.kubeconfig)), commands)
