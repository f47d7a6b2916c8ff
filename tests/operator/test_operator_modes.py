"""``kubechat operator`` started exactly as the README and the Helm chart start it, namespaced
and cluster-wide, on the Kubernetes API emulator: a ModelDeployment in each watched namespace
gets its worker pod and its status, one in any other namespace is left alone.

The README's command is read from README.md ("Without Helm", step 2; namespaced with the
``--namespace NS`` it describes), the chart's from ``helm template`` (the operator Deployment's
entrypoint and args, ``operator.clusterWide`` false with one extra watched namespace, and true).
Both listen on their default ports, as written (tests/docs/shell.py holds them). No pod runs:
the pods are the operator's answer."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import httpx
import kubernetes
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.chart_tools import CHART, container_command, render
from tests.docs.commands import all_snippets, shell_commands
from tests.docs.shell import DocShell, documented_ports
from tests.support.kube_operator import GROUP, PLURAL, VERSION, create_model_deployment
from tests.support.kube_server import kubernetes_client, running_emulator
from tests.support.processes import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RELEASE_NAMESPACE, EXTRA, UNWATCHED = "chat", "team-b", "elsewhere"
NAMESPACES = (RELEASE_NAMESPACE, EXTRA, UNWATCHED)


def readme_command() -> str:
    """The operator command the README gives."""
    (command,) = {
        c
        for s in all_snippets()
        if s.path == "README.md"
        for c in shell_commands(s.text)
        if c.startswith("kubechat operator")
    }
    return command


def chart_command(*sets: str) -> str:
    """The operator's command line as the chart renders it, released in ``chat``."""
    docs = render(sets=sets, namespace=RELEASE_NAMESPACE)
    return shlex.join(container_command(docs, "operator"))


MODES: dict[str, tuple[Callable[[], str], set[str]]] = {
    "readme-cluster-wide": (readme_command, set(NAMESPACES)),
    "readme-namespaced": (lambda: f"{readme_command()} --namespace {RELEASE_NAMESPACE}", {"chat"}),
    "chart-namespaced": (
        lambda: chart_command(f"operator.watchNamespaces={{{EXTRA}}}"),
        {RELEASE_NAMESPACE, EXTRA},
    ),
    "chart-cluster-wide": (lambda: chart_command("operator.clusterWide=true"), set(NAMESPACES)),
}


def reconciles() -> float:
    """``kubechat_operator_reconciles_total{result="ok"}`` on the default metrics port."""
    text = httpx.get("http://127.0.0.1:8080/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "kubechat_operator_reconciles_total" and s.labels == {"result": "ok"}
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_model_deployment_in_each_watched_namespace_gets_its_pod(
    mode: str, tmp_path: Path
) -> None:
    make_command, watched = MODES[mode]
    command = make_command()
    assert ("--namespace" in command) == (watched != set(NAMESPACES)), command
    with (
        documented_ports(),
        running_emulator(
            crds=[CHART / "crds" / "modeldeployment.yaml"],
            namespaces=("default", *NAMESPACES),
            directory=tmp_path / "api",
        ) as emulator,
        DocShell(tmp_path, env={"KUBECONFIG": str(emulator.kubeconfig)}) as shell,
    ):
        shell.start(command, timeout=120)
        api = kubernetes_client(emulator.kubeconfig)
        core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
        uids = {
            ns: create_model_deployment(emulator.kubeconfig, namespace=ns)["metadata"]["uid"]
            for ns in NAMESPACES
        }

        def pods(namespace: str) -> list:
            labels = "kubechat.dev/deployment=demo"
            return core.list_namespaced_pod(namespace, label_selector=labels).items

        def status(namespace: str) -> dict:
            md = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "demo")
            return md.get("status") or {}

        until(
            lambda: all(pods(ns) and status(ns).get("replicas") == 1 for ns in watched),
            60,
            what=f"a pod and a status in each of {sorted(watched)}",
        )
        for namespace in watched:
            (pod,) = pods(namespace)
            assert pod.metadata.owner_references[0].uid == uids[namespace]
            assert pod.spec.service_account_name == "kubechat-worker"
        # every watched deployment is reconciled once more (the timer): the others had time too
        seen = reconciles()
        until(lambda: reconciles() >= seen + len(watched), 30, what="another round of passes")
        for namespace in set(NAMESPACES) - watched:
            assert pods(namespace) == [] and status(namespace) == {}, namespace
