"""Where vLLM's own Python environment is: vLLM pins its own torch and transformers, so it
never shares kubechat's.

One setting names it for local mode, the tests and ``.ci/install-vllm.sh`` (which builds it):
``$KUBECHAT_VLLM_VENV``, by default ``~/.cache/kubechat/vllm-venv``.
"""

from __future__ import annotations

import os
from pathlib import Path

VENV_VARIABLE = "KUBECHAT_VLLM_VENV"
DEFAULT_VENV = "~/.cache/kubechat/vllm-venv"
INSTALL_HINT = "bash .ci/install-vllm.sh builds one (or: pip install vllm into a virtualenv)"


def vllm_venv(venv: str | os.PathLike[str] | None = None) -> Path:
    """The environment named by ``venv``, else ``$KUBECHAT_VLLM_VENV``, else the default."""
    chosen = venv or os.environ.get(VENV_VARIABLE) or DEFAULT_VENV
    return Path(os.path.expanduser(chosen))


def vllm_python(venv: str | os.PathLike[str] | None = None) -> Path:
    """That environment's Python; raises FileNotFoundError saying how to get one."""
    folder = vllm_venv(venv)
    python = folder / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(
            f"no vLLM environment at {folder} (no bin/python; set {VENV_VARIABLE} or pass its "
            f"folder); {INSTALL_HINT}"
        )
    return python
