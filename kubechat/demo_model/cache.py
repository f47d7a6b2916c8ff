"""Where the demo model lives once built, shared by ``kubechat up`` and workers."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DEMO_MODEL_PATH = "kubechat:demo"


def demo_model_dir() -> Path:
    """``$KUBECHAT_CACHE/demo-model`` (default ``~/.cache/kubechat/demo-model``)."""
    base = os.environ.get("KUBECHAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubechat"
    )
    return Path(base) / "demo-model"


def ensure_demo_model(progress: bool = True) -> Path:
    """Build the demo model into the cache unless a complete build is there; return its folder."""
    from .build import build_demo_model  # heavy (torch): only when asked

    target = demo_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: one builds, the others wait and then reuse the build.
    with open(target.parent / ".demo-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_demo_model(target, progress=progress)
