"""kopf against the emulator: log in to a base URL without any kubeconfig or $KUBECONFIG."""

from __future__ import annotations

import kopf


def register_login(
    registry: kopf.OperatorRegistry, base_url: str, namespace: str = "default"
) -> None:
    """Make operators of ``registry`` log in to ``base_url`` (insecure http, no credentials)."""

    @kopf.on.login(registry=registry)
    def emulator_login(**_: object) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=base_url, insecure=True, default_namespace=namespace)
