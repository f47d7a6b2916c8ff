"""Rendering the Helm chart and finding the command-line tools the chart tests drive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_tools import ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubechat"
ALL_ON_VALUES = Path(__file__).with_name("values-all-on.yaml")
RELEASE = "kc"
NAMESPACE = "chat"


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path; when missing, fail under CI (CI=true) and skip elsewhere."""
    # tools with conflicting dependencies live in their own venvs, linked from .tools/bin
    tools_bin = Path(os.environ.get("KUBECHAT_TOOLS_DIR") or REPO / ".tools") / "bin"
    path = shutil.which(name) or shutil.which(name, path=str(tools_bin))
    if path:
        return path
    message = f"{name} is not installed ({install_hint})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI must have it: run .ci/install-chart-tools.sh")
    pytest.skip(message)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; with ``check``, a non-zero exit fails with helm's output."""
    result = subprocess.run(
        [str(ensure_helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def render_text(*values_files: Path, sets: tuple[str, ...] = (), namespace: str = NAMESPACE) -> str:
    """``helm template`` output for the chart with these values files and --set pairs."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for values in values_files:
        args += ["--values", str(values)]
    for pair in sets:
        args += ["--set", pair]
    return helm(*args).stdout


def render(
    *values_files: Path, sets: tuple[str, ...] = (), namespace: str = NAMESPACE
) -> list[dict]:
    """The rendered chart's objects (templates only; the CRD is in crds/)."""
    text = render_text(*values_files, sets=sets, namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict], kind: str, name_suffix: str = "") -> list[dict]:
    """Objects of ``kind`` whose name ends with ``name_suffix``."""
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single object of ``kind`` whose name ends with ``name_suffix``."""
    found = find(docs, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[dict]) -> dict[str, dict[str, Any]]:
    """Pod templates of every workload, by workload name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    }


def container_command(docs: list[dict], role: str) -> list[str]:
    """The command line of a chart workload's first container (Deployment ``*-<role>``): its
    ``command``, else the image's ENTRYPOINT (from the Dockerfile), then its ``args``."""
    container = one(docs, "Deployment", f"-{role}")["spec"]["template"]["spec"]["containers"][0]
    command = container.get("command")
    if command is None:
        (line,) = [
            line
            for line in (REPO / "Dockerfile").read_text().splitlines()
            if line.startswith("ENTRYPOINT ")
        ]
        command = json.loads(line.removeprefix("ENTRYPOINT "))
    return [*command, *container.get("args", [])]


def arg_value(args: list[str], flag: str) -> str | None:
    """The value of ``--flag=value`` in a container's args."""
    for arg in args:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None
