"""Where the demo model lives once built, shared by ``kubechat up`` and workers."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_MODEL_PATH = "kubechat:demo"


def demo_model_dir() -> Path:
    """``$KUBECHAT_CACHE/demo-model`` (default ``~/.cache/kubechat/demo-model``)."""
    base = os.environ.get("KUBECHAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubechat"
    )
    return Path(base) / "demo-model"


def cached_demo_model() -> Path | None:
    """The cache's demo model folder when a complete, current build is there; None when
    :func:`ensure_demo_model` would build it."""
    from .build import build_fingerprint, is_complete
    from .train import TrainSettings

    target = demo_model_dir()
    return target if is_complete(target, build_fingerprint(TrainSettings())) else None


def ensure_demo_model(progress: bool = True) -> Path:
    """Build the demo model into the cache unless a complete build is there; return its folder."""
    from .build import build_demo_model  # heavy (torch): only when asked

    # Several workers may start at once: build_demo_model holds a lock beside the target,
    # so one builds and the others wait and then reuse the build.
    return build_demo_model(demo_model_dir(), progress=progress)
