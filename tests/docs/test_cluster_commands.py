"""The cluster guide without Helm (README "Without Helm", docs/kubernetes.md), run as written on
the Kubernetes API emulator: real kubectl, ``kubechat operator`` started exactly as documented
(cluster-wide, default ports), the test kubelet running the worker pods on a node without GPUs,
and the documented gateways and chat page.

The commands run in reading order (deletions last), each followed by what a reader would wait
for or look at (tests/docs/guide.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.commands import all_snippets, scenario_of
from tests.docs.guide import Guide, guide_steps, run_guide
from tests.docs.shell import DocShell, documented_ports
from tests.support.kube_server import kubernetes_client, running_emulator
from tests.support.pod_runner import PodRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_the_cluster_guide_runs_as_written(demo_model_dir: Path, tmp_path: Path) -> None:
    commands = guide_steps([s for s in all_snippets() if scenario_of(s) == "cluster"])
    assert any(c.startswith("kubechat operator") and "--namespace" not in c for _, c, _ in commands)
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
