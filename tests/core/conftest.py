"""Fixtures for the core tests: a valid ModelDeployment to vary, and worker records to vary."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from kubechat.discovery.records import WorkerRecord

BASE_MANIFEST: dict[str, Any] = {
    "apiVersion": "kubechat.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "chat"},
    "spec": {"model": {"path": "org/chat-model"}},
}


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the intermediate ones."""
    *parents, last = path.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[last] = value


@pytest.fixture
def manifest() -> Callable[..., dict[str, Any]]:
    """A fresh valid manifest; pass ``{"spec.resources.gpus": 2}`` to change fields."""

    def make(changes: dict[str, Any] | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(BASE_MANIFEST)
        for path, value in (changes or {}).items():
            set_path(obj, path, value)
        return obj

    return make


@pytest.fixture
def make_record() -> Callable[..., WorkerRecord]:
    """A live worker record (renewed just now) with the given fields changed."""

    def make(name: str = "w0", **changes: Any) -> WorkerRecord:
        fields: dict[str, Any] = {
            "name": name,
            "deployment": "chat",
            "models": ("chat",),
            "address": "http://127.0.0.1:8001",
            "ready": True,
            "draining": False,
            "in_flight": 0,
            "queued": 0,
            "capacity": 32,
            "renew_time": time.time(),
            "lease_duration": 6.0,
        }
        fields.update(changes)
        return WorkerRecord(**fields)

    return make
