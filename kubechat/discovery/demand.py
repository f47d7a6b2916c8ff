"""Demand for autoscaled models: which models may be scaled to zero, and "this one is wanted".

The gateway and the UI hold a request for a model whose deployment is autoscaled and has no live
worker, and say so here; whoever runs the workers (the operator, ``kubechat up``) reads it and
starts one. Two stores, like the lease stores:

- Kubernetes (``KubernetesDemand``): the autoscaled ModelDeployments are listed every few
  seconds; demand is the ``kubechat.dev/demand`` annotation on the ModelDeployment (a MicroTime,
  renewed while requests wait), so the operator sees it in the object it reconciles, at once
  (an annotation change is an update event).
- Local (``LocalDemand``): ``kubechat up`` declares its autoscaled deployments as files in
  ``DIR/autoscaled/`` of the lease folder; demand is a file per deployment in ``DIR/demand/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubechat.spec import GROUP, PLURAL, VERSION

from .atomic_json import replace_json
from .records import format_micro_time, parse_micro_time

log = logging.getLogger(__name__)

DEMAND_ANNOTATION = "kubechat.dev/demand"
AUTOSCALED_DIR = "autoscaled"
DEMAND_DIR = "demand"


@dataclass(frozen=True)
class ScalableDeployment:
    """An autoscaled deployment: where it lives and the model names it serves."""

    namespace: str
    name: str
    models: tuple[str, ...]


class Demand(Protocol):
    """What the gateway and the UI use: autoscaled models, and a way to ask for one."""

    def deployment_for(self, model: str) -> ScalableDeployment | None:
        """The autoscaled deployment serving ``model``, if any."""
        ...

    def models(self) -> list[str]:
        """Every model name of an autoscaled deployment, sorted."""
        ...

    async def want(self, deployment: ScalableDeployment) -> None:
        """Say that ``deployment``'s model is wanted now."""
        ...


def demand_time(annotations: Mapping[str, str] | None) -> float | None:
    """The demand a ModelDeployment's annotations carry (unix seconds), None if none or bad."""
    text = (annotations or {}).get(DEMAND_ANNOTATION)
    if not text:
        return None
    try:
        return parse_micro_time(text)
    except ValueError:
        log.warning("ignoring %s=%r: not a timestamp", DEMAND_ANNOTATION, text)
        return None


def served_models(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The model names a ModelDeployment (as the API returns it) serves."""
    names = ((body.get("spec") or {}).get("model") or {}).get("names")
    return tuple(str(n) for n in names) if names else (body["metadata"]["name"],)


class _Catalogue:
    """Model name -> autoscaled deployment, replaced as a whole on every refresh."""

    def __init__(self) -> None:
        self._by_model: dict[str, ScalableDeployment] = {}

    def deployment_for(self, model: str) -> ScalableDeployment | None:
        """The autoscaled deployment serving ``model``, if any."""
        return self._by_model.get(model)

    def models(self) -> list[str]:
        """Every model name of an autoscaled deployment, sorted."""
        return sorted(self._by_model)

    def _replace(self, deployments: Iterable[ScalableDeployment]) -> None:
        self._by_model = {m: d for d in deployments for m in d.models}


class LocalDemand(_Catalogue):
    """Demand as files in the local lease folder ``lease_dir``."""

    def __init__(self, lease_dir: Path | str, refresh_seconds: float = 1.0) -> None:
        super().__init__()
        self.lease_dir = Path(lease_dir)
        self.refresh_seconds = refresh_seconds
        self._read_at = -1e9

    def declare(self, deployment: ScalableDeployment) -> None:
        """Record ``deployment`` as autoscaled (``kubechat up`` does, at start)."""
        replace_json(
            self.lease_dir / AUTOSCALED_DIR / f"{deployment.name}.json",
            {"name": deployment.name, "models": list(deployment.models)},
        )

    def deployment_for(self, model: str) -> ScalableDeployment | None:
        """The autoscaled deployment serving ``model`` (the folder re-read at most once per
        ``refresh_seconds``)."""
        self._refresh()
        return super().deployment_for(model)

    def models(self) -> list[str]:
        """Every model name of an autoscaled deployment, sorted."""
        self._refresh()
        return super().models()

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= self.refresh_seconds:
            self._read_at = time.monotonic()
            self._replace(self._declared())

    def _declared(self) -> list[ScalableDeployment]:
        out = []
        for path in sorted((self.lease_dir / AUTOSCALED_DIR).glob("*.json")):
            try:
                data = json.loads(path.read_text())
                out.append(ScalableDeployment("", str(data["name"]), tuple(data["models"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping %s: %s", path, exc)
        return out

    async def want(self, deployment: ScalableDeployment) -> None:
        """Write the demand file of ``deployment`` with the current time."""
        path = self.lease_dir / DEMAND_DIR / f"{deployment.name}.json"
        await asyncio.to_thread(replace_json, path, {"time": time.time()})

    def demand(self, name: str) -> float | None:
        """When deployment ``name`` was last wanted (unix seconds), None if never."""
        try:
            data = json.loads((self.lease_dir / DEMAND_DIR / f"{name}.json").read_text())
            return float(data["time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class KubernetesDemand(_Catalogue):
    """Autoscaled ModelDeployments listed from the API every ``refresh_seconds`` in
    ``namespaces`` (None: every namespace); demand written as their annotation."""

    def __init__(
        self, api: Any, namespaces: list[str | None], refresh_seconds: float = 2.0
    ) -> None:
        super().__init__()
        self.api = api
        self.namespaces = namespaces
        self.refresh_seconds = refresh_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """List now (a failure is retried in the background), then every ``refresh_seconds``."""
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as exc:
            log.warning("listing ModelDeployments failed (%r); retrying in the background", exc)
        self._thread = threading.Thread(target=self._loop, name="demand-list", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop listing."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the API is down: keep the last list
                log.warning("listing ModelDeployments failed: %r", exc)

    def refresh(self) -> None:
        """List the autoscaled ModelDeployments now."""
        import kubernetes

        custom = kubernetes.client.CustomObjectsApi(self.api)
        found = []
        for namespace in self.namespaces:
            if namespace is None:
                data = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                data = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            for item in data.get("items") or []:
                if not (item.get("spec") or {}).get("autoscaling"):
                    continue
                meta = item["metadata"]
                namespace = meta.get("namespace") or ""
                found.append(ScalableDeployment(namespace, meta["name"], served_models(item)))
        self._replace(found)

    async def want(self, deployment: ScalableDeployment) -> None:
        """Set the demand annotation of ``deployment`` to now."""
        await asyncio.to_thread(self._annotate, deployment, time.time())

    def _annotate(self, deployment: ScalableDeployment, when: float) -> None:
        import kubernetes

        patch = {"metadata": {"annotations": {DEMAND_ANNOTATION: format_micro_time(when)}}}
        kubernetes.client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, deployment.namespace, PLURAL, deployment.name, patch
        )


def open_demand(store: Any) -> Demand | None:
    """The demand store that goes with a lease store: files beside local leases, the
    ModelDeployments of the namespaces a Kubernetes store reads; None for no store."""
    from .local_store import LocalLeaseStore

    if isinstance(store, LocalLeaseStore):
        return LocalDemand(store.state_dir)
    try:
        from .kube_store import KubernetesLeaseStore
    except ImportError:  # pragma: no cover - a build without the Kubernetes client
        return None
    if isinstance(store, KubernetesLeaseStore):
        return KubernetesDemand(store.api, list(store.scopes))
    return None
