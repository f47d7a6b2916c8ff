"""An emulated API server serving the real ModelDeployment CRD, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.support.kube_server import RunningEmulator, kubernetes_client, running_emulator

CRD = Path(__file__).resolve().parents[2] / "crds" / "modeldeployment.yaml"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """The API emulator in its own thread, with the ModelDeployment CRD installed."""
    with running_emulator(crds=[CRD], directory=tmp_path_factory.mktemp("api")) as handle:
        yield handle


@pytest.fixture(scope="module")
def api(emulator: RunningEmulator) -> kubernetes.client.ApiClient:
    """The official client on the emulator."""
    return kubernetes_client(emulator.kubeconfig)
