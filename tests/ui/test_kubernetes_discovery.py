"""``kubechat ui --lease-store kubernetes``: the page finds workers through Leases and Pod
readiness on the Kubernetes API (the emulator), as the gateway does, and follows them live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from gradio_client import Client

from kubechat.discovery.kube_store import KubernetesLeaseStore
from tests.support.kube_server import RunningEmulator, kubernetes_client, running_emulator
from tests.support.processes import free_port, kubechat_argv, running, until, wait_http
from tests.support.stub_workers import serve
from tests.ui.stub_worker import MODELS, stub_app, stub_record

POD = "stub-pod"


def set_ready(api: kubernetes.client.ApiClient, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        POD, "default", {"status": {"phase": "Running", "conditions": [condition]}}
    )


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with running_emulator(directory=tmp_path_factory.mktemp("ui-api")) as handle:
        yield handle


def test_page_chats_with_a_worker_found_through_leases(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    api = kubernetes_client(emulator.kubeconfig)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "labels": {"kubechat.dev/deployment": "stub"}},
        "spec": {"containers": [{"name": "worker", "image": "kubechat"}]},
    }
    kubernetes.client.CoreV1Api(api).create_namespaced_pod("default", pod)
    set_ready(api, True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubechat_argv(
        "ui", "--lease-store", "kubernetes:default", "--host", "127.0.0.1", "--port", str(port)
    )
    env = {"KUBECONFIG": str(emulator.kubeconfig)}
    with (
        serve(stub_app()) as address,
        running(argv, ready_url=None, log_path=tmp_path / "ui.log", env=env) as proc,
    ):
        KubernetesLeaseStore("default", api_client=api, pod_name=POD).publish(
            stub_record(POD, address)
        )
        wait_http(url + "/", 180, proc)
        client = Client(url + "/", verbose=False)

        def listed() -> list[str]:
            update = client.predict(None, api_name="/models")
            return [value for _, value in update["choices"]]

        until(lambda: listed() == list(MODELS), 20, 0.2, "the page listing the Lease's models")
        _, window = client.predict("hello", [], "stub-echo", 0.7, 1.0, 16, api_name="/chat")
        assert "You said: hello" in str(window[-1]["content"])

        set_ready(api, False)  # the pod stops being Ready: the page stops offering its models
        until(lambda: not listed(), 20, 0.2, "the page dropping a worker whose pod is not Ready")
        _, window = client.predict("hello", [], "stub-echo", 0.7, 1.0, 16, api_name="/chat")
        assert "No worker is available" in str(window[-1]["content"])
