"""Fixtures for tests of the Kubernetes test layer: an emulated API server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.kube.common import MINIMAL_CRD
from tests.support.kube_server import RunningEmulator, kubernetes_client, running_emulator


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningEmulator]:
    """An emulated API server (in its own thread) serving the minimal test CRD."""
    with running_emulator(crds=[MINIMAL_CRD], directory=tmp_path) as handle:
        yield handle


@pytest.fixture
def api(cluster: RunningEmulator) -> kubernetes.client.ApiClient:
    """The official client, configured from the emulator's kubeconfig."""
    return kubernetes_client(cluster.kubeconfig)
