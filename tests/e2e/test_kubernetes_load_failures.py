"""Workers that cannot load their model, end to end on the API emulator: real kubectl, the real
operator, the test kubelet running real workers that fail. Each worker writes why to its
termination-message file (the path its pod sets), the kubelet reports it, and the
ModelDeployment's ModelLoadFailed condition carries the worker's reason and message:

- a model path that does not exist: WorkerExited, naming the path;
- a Baichuan-13B-layout checkpoint whose own modeling code breaks: RemoteCodeIncompatible, with
  the exception type, the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.baichuan13b_checkpoint import broken_modeling_checkpoint
from tests.support.processes import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def deployment(name: str, path: Path | str) -> dict[str, Any]:
    return {
        "apiVersion": "kubechat.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"path": str(path), "names": [name], "trustRemoteCode": True},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
            "replicas": 1,
        },
    }


def load_failed(cluster, name: str) -> dict[str, Any] | None:
    conditions = (cluster.md(name).get("status") or {}).get("conditions") or []
    found = next((c for c in conditions if c["type"] == "ModelLoadFailed"), None)
    return found if found and found["status"] == "True" else None


@pytest.mark.parametrize(
    ("name", "reason", "words"),
    [
        ("missing-model", "WorkerExited", ["does not exist", "/no/such/model"]),
        (
            "broken-code",
            "RemoteCodeIncompatible",
            ["AttributeError", "(modeling_baichuan.py, line ", "does not run with transformers"],
        ),
    ],
)
def test_the_workers_own_reason_reaches_the_condition(
    cluster, baichuan13b_dir: Path, tmp_path: Path, name: str, reason: str, words: list[str]
) -> None:
    path = (
        "/no/such/model"
        if name == "missing-model"
        else broken_modeling_checkpoint(baichuan13b_dir, tmp_path)
    )
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(deployment(name, path)))
    cluster.kubectl("apply", "-f", str(manifest))
    try:
        failed = until(lambda: load_failed(cluster, name), timeout=180, what="ModelLoadFailed")
        assert failed["reason"] == reason, failed
        for word in words:
            assert word in failed["message"], failed["message"]
        (pod,) = [
            p
            for p in cluster.core.list_namespaced_pod("default").items
            if p.metadata.name.startswith(name)
        ]
        assert pod.metadata.name in failed["message"]
        assert cluster.md(name)["status"]["phase"] == "Failed"
    finally:
        cluster.kubectl("delete", "-f", str(manifest))
