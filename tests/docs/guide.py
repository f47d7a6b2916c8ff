"""What a reader of the cluster guides checks after each documented command, on the emulated
cluster (tests/docs/test_cluster_commands.py, tests/docs/test_chart_commands.py): the table
``kubectl get md`` prints against the docs' example, pods after an apply or a scale, the answer
through each documented gateway. Servers run through the :class:`DocShell`; the operator stays
up, each gateway and the chat page are stopped after their check (they share default ports)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

import httpx
import kubernetes
import yaml

from tests.docs.commands import Snippet, output_example, steps
from tests.docs.shell import DocShell, is_server
from tests.support.processes import until

SEED = "Which mountain is the second highest one in the world?"
GROUP, VERSION, PLURAL = "kubechat.dev", "v1alpha1", "modeldeployments"
GATEWAY = "http://127.0.0.1:8000"


def guide_steps(snippets: list[Snippet]) -> list[tuple[Snippet, str, list[str]]]:
    """The unmarked snippets' commands in reading order, each with the output the docs show for
    it; deletions moved to the end (the docs describe ``kubectl delete md demo`` before commands
    that read the deployment)."""
    found = [(s, c, shown) for s in snippets if s.not_run is None for c, shown in steps(s)]
    deletion = [step for step in found if step[1].startswith("kubectl delete ")]
    return [step for step in found if step not in deletion] + deletion


def run_guide(guide: Guide, commands: list[tuple[Snippet, str, list[str]]]) -> None:
    """Run each command as written (servers started and checked), then its check; a command
    shown with its output (a console transcript) must print it, whatever its exit code."""
    for snippet, command, shown in commands:
        if is_server(command):
            guide.serve(command)
            continue
        output = guide.shell.run(command, check=not shown)
        for line in shown:
            assert line in output, f"{snippet.where}: `{command}` did not print {line!r}"
        guide.after(snippet, command, output)


class Guide:
    """The emulated cluster a guide runs on (its models in ``namespace``, where ``kubectl``
    commands without ``-n`` act too), and what a reader checks after each command."""

    def __init__(
        self, shell: DocShell, api: kubernetes.client.ApiClient, namespace: str = "default"
    ) -> None:
        self.shell, self.namespace = shell, namespace
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def md(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.md(name) or {}).get("status") or {}

    def pods(self, name: str) -> list[Any]:
        selector = f"kubechat.dev/deployment={name}"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    # --- after each command -----------------------------------------------------------------

    def after(self, snippet: Snippet, command: str, output: str) -> None:
        for pattern, check in self.checks():
            if re.fullmatch(pattern, command):
                check(snippet, command, output)

    def checks(self) -> list[tuple[str, Callable[[Snippet, str, str], None]]]:
        return [
            (r"kubectl apply -f crds/modeldeployment\.yaml", self.crd_installed),
            (r"kubectl explain \S+\.spec", self.explained),
            (r"kubectl apply -f examples/demo-cluster\.yaml", self.demo_ready),
            (r"kubectl apply (-n \S+ )?-f examples/baichuan\.yaml", self.baichuan_pending),
            (r"kubectl get md", self.table_as_documented),
            (r"kubectl scale (-n \S+ )?md/\S+ --replicas=\d+", self.scaled),
            (r"kubectl patch md demo .*limitConcurrency.*", self.rolling),
            (r"kubectl describe md demo", self.described),
            (r"kubectl get md demo -o yaml", self.status_fields),
            (r"kubectl delete md demo", self.deleted),
        ]

    def crd_installed(self, _s: Snippet, _c: str, output: str) -> None:
        crd = "customresourcedefinition.apiextensions.k8s.io/modeldeployments.kubechat.dev"
        assert re.search(rf"{re.escape(crd)} (created|unchanged|configured)", output), output

    def explained(self, _s: Snippet, _c: str, output: str) -> None:
        assert "KIND:       ModelDeployment" in output and "FIELD: spec" in output, output

    def demo_ready(self, *_: object) -> None:
        def ready() -> bool:
            md = self.md("demo") or {}
            return (md.get("status") or {}).get("readyReplicas") == md["spec"]["replicas"]

        until(ready, 300, what="every demo replica ready")

    def baichuan_pending(self, *_: object) -> None:
        def unschedulable() -> bool:
            pods = self.pods("baichuan-13b-chat")
            return bool(pods) and all(
                c.reason == "Unschedulable" for p in pods for c in p.status.conditions or []
            )

        until(unschedulable, 60, what="baichuan's pod, Pending on a node without GPUs")

    def table_as_documented(self, snippet: Snippet, command: str, output: str) -> None:
        example = output_example(snippet)
        if example is None:
            return
        shown = [line.split() for line in example.strip().splitlines()]
        wanted = {row[0]: row[:-1] for row in shown[1:]}  # all but AGE

        printed = [""]

        def as_shown() -> bool:
            printed[0] = self.shell.run(command)
            table = [line.split() for line in printed[0].strip().splitlines()]
            rows = {row[0]: row[:-1] for row in table[1:]}
            return table[0] == shown[0] and all(rows.get(n) == r for n, r in wanted.items())

        until(
            as_shown,
            120,
            what=f"{command} prints what {snippet.where} shows:\n{example}(last:\n{printed[0]})",
        )

    def scaled(self, _s: Snippet, command: str, _o: str) -> None:
        name, replicas = re.findall(r"md/(\S+) --replicas=(\d+)", command)[0]
        wanted = int(replicas)
        live = lambda: [p for p in self.pods(name) if not p.metadata.deletion_timestamp]  # noqa: E731
        until(lambda: len(live()) == wanted, 60, what=f"{wanted} pods of {name}")

    def rolling(self, *_: object) -> None:
        md = self.md("demo") or {}
        assert md["spec"]["worker"]["limitConcurrency"] == 16

        def new_template_started() -> bool:
            observed = self.status("demo").get("observedGeneration")
            hashes = {p.metadata.labels["kubechat.dev/template-hash"] for p in self.pods("demo")}
            return observed == md["metadata"]["generation"] and len(hashes) > 1

        until(new_template_started, 60, what="the operator starts rolling to the new spec")

    def described(self, _s: Snippet, _c: str, output: str) -> None:
        for part in ("Name:         demo", "Workers:", "Conditions:", "Available", "Events:"):
            assert part in output, f"kubectl describe md demo lacks {part!r}:\n{output}"

    def status_fields(self, _s: Snippet, _c: str, output: str) -> None:
        status = yaml.safe_load(output)["status"]
        for field in ("phase", "replicas", "readyReplicas", "selector", "workers", "conditions"):
            assert field in status, f"status has no {field}: {status}"
        assert status["observedGeneration"] >= 1

    def deleted(self, *_: object) -> None:
        until(lambda: not self.pods("demo") and self.md("demo") is None, 120, what="demo gone")

    # --- servers ------------------------------------------------------------------------------

    def serve(self, command: str) -> None:
        self.shell.start(command)
        words = shlex.split(command, comments=True)
        if words[1] == "gateway":
            self.ask_gateway(words)
        elif words[1] == "ui":
            assert "gradio" in httpx.get("http://127.0.0.1:7860/", timeout=10).text.lower()
        if words[1] != "operator":
            assert self.shell.stop(command) in (0, -15), f"`{command}` did not stop cleanly"

    def ask_gateway(self, words: list[str]) -> None:
        store = words[words.index("--lease-store") + 1]
        namespaces = store.partition(":")[2] or "default"  # kubeconfig's namespace: default
        sees_demo = namespaces == "*" or self.namespace in namespaces.split(",")
        if not sees_demo:
            assert _models() == [], f"--lease-store {store} lists {_models()}"
            return
        until(lambda: _models() == ["kubechat-demo"], 30, what=f"--lease-store {store}: demo")
        body = {"model": "kubechat-demo", "messages": [{"role": "user", "content": SEED}]}
        answer = httpx.post(f"{GATEWAY}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert "K2" in answer.json()["choices"][0]["message"]["content"]


def _models() -> list[str]:
    """The model ids the documented gateway lists."""
    return [m["id"] for m in httpx.get(f"{GATEWAY}/v1/models", timeout=5).json()["data"]]
