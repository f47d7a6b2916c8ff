"""Shared bits of the emulator tests: the test CRDs and polling for conditions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support.processes import until

T = TypeVar("T")
MINIMAL_CRD = Path(__file__).parent / "minimal_crd.yaml"
PROJECT_CRD = Path(__file__).resolve().parents[2] / "crds" / "modeldeployment.yaml"
WIDGETS = ("test.kubechat.dev", "v1", "widgets")  # group, version, plural of the minimal CRD


def eventually(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Call ``check`` until it returns a truthy value (returned) or the timeout passes."""
    return until(check, timeout, interval)
