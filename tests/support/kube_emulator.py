"""A Kubernetes API server for tests: kmock's ``KubernetesEmulator`` made good enough for kopf,
the official ``kubernetes`` client and real ``kubectl``.

kmock 0.8 (pinned: this relies on its internals) gives the object array (``emulator.objects``),
the bundled discovery of built-in resources and the aiohttp handler protocol. Requests on object
paths (``/api/v1/...``, ``/apis/G/V/...``) are served here rather than by kmock's own emulation,
with the semantics of :mod:`kube_store`; discovery, ``/version`` and anything declared with the
kmock DSL still go through kmock (discovery with the fixes of :mod:`kube_discovery`).

Served: get, list and watch (label and field selectors, resourceVersion-aware watches with
``timeoutSeconds``), create (201), replace, merge/strategic/JSON patch, delete and
delete-collection, ``dryRun``, the ``status`` and ``scale`` subresources, Table output for
``kubectl get`` (CRD printer columns), CRDs served once created (or :meth:`register_crd`) with
their schema applied to custom resources (pruning, defaults, validation: :mod:`kube_schema`),
``/openapi/v3`` for CRDs (``kubectl explain``; server-side field validation of custom resources,
``fieldValidation=Strict``, so ``kubectl apply`` needs no ``--validate=false``). Not served:
pagination (lists come whole), built-in kinds' schemas, admission webhooks, RBAC, server-side
apply, CEL validation rules, ``logs``/``exec``/``portforward``. Namespaces are not required to
exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import importlib.resources
import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock

from tests.support import kube_crds, kube_openapi, kube_schema, kube_tables, kube_watch
from tests.support.kube_discovery import DiscoveryMixin
from tests.support.kube_patches import (
    APPLY_PATCH,
    STRATEGIC_PATCH,
    PatchError,
    PatchTestFailed,
    apply_patch,
)
from tests.support.kube_scale import scale_of, write_scale
from tests.support.kube_selectors import SelectorError, object_selector
from tests.support.kube_store import NAMESPACES, ApiError, Key, KubeStore, now_rfc3339

KMOCK_REQUESTS_KEPT = 2000


@dataclasses.dataclass(frozen=True)
class ApiPath:
    """An object path of the API: ``/api/v1/namespaces/NS/pods/NAME/status`` and the like."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def key(self) -> Key:
        return (self.resource, self.namespace, self.name or "")


def parse_api_path(path: str) -> ApiPath | None:
    """Parse an object path; None for discovery and other paths (``/api``, ``/apis/G/V``)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    plural, name, subresource = [*rest, None, None][:3]
    return ApiPath(group, version, plural, namespace, name, subresource)


@functools.cache
def _bundled_resources() -> bytes:
    """kmock's bundled discovery of built-in resources (what ``load_bundled`` reads)."""
    packed = importlib.resources.files("kmock._internal").joinpath("resources.json.gz")
    return gzip.decompress(packed.read_bytes())


@attrs.define(kw_only=True)
class KubeEmulator(DiscoveryMixin, kmock.KubernetesEmulator):
    """The emulated API server, an aiohttp handler (serve it with :mod:`kube_server`).

    State changes only on the event loop that serves it: from other threads, go through HTTP
    or ``asyncio.run_coroutine_threadsafe`` (see ``RunningEmulator.call``).
    """

    namespaces: tuple[str, ...] = ("default",)
    #: Refuse custom resources that break their CRD's schema (422), as the API server does.
    validate: bool = True
    #: Delete dependents of a removed owner (ownerReferences), as the garbage collector does.
    garbage_collection: bool = True
    store: KubeStore = attrs.field(init=False)
    #: (method, path?query, status) of the last API requests (watches: once they end).
    api_log: deque[tuple[str, str, int]] = attrs.field(
        init=False, factory=lambda: deque(maxlen=5000)
    )
    #: path?query of the watch requests being streamed right now.
    open_watches: list[str] = attrs.field(init=False, factory=list)
    #: Fault injection: a request that one of these matches is refused (see :meth:`partition`).
    partitions: list[Callable[[aiohttp.web.BaseRequest], bool]] = attrs.field(
        init=False, factory=list
    )
    _stopping: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_data(_bundled_resources())
        self.store = KubeStore(self.resources, self.objects)
        self.store.garbage_collection = self.garbage_collection
        self.store.admit.append(self._accept_crd)
        self.store.admit.append(self._admit_custom_resource)
        self.store.after_store.append(self._serve_stored_crd)
        self.store.after_remove.append(self._drop_removed_crd)
        for namespace in self.namespaces:
            self.store.create(NAMESPACES, None, {"metadata": {"name": namespace}})

    def register_crd(self, source: str | Path | dict[str, Any]) -> list[kmock.resource]:
        """Store a CRD (a dict, YAML text or a YAML file) and serve its resources at once."""
        crd = kube_crds.load_crd(source)
        key = (kube_crds.CRD_RESOURCE, None, crd["metadata"]["name"])
        if self.store.get(key) is None:
            self.store.create(kube_crds.CRD_RESOURCE, None, crd)
        else:
            self.store.update(key, lambda current: {**crd, "metadata": current["metadata"]})
        return [served.resource for served in kube_crds.served_versions(crd)]

    def stop_watches(self) -> None:
        """End every open watch stream (before the server shuts down)."""
        self._stopping = True
        self.store.changed.set()

    def partition(self, match: Callable[[aiohttp.web.BaseRequest], bool]) -> Callable[[], None]:
        """Cut off the requests that ``match``: their open watches end now and new ones, like any
        other matching request, get 503 until the returned function is called (both on the
        emulator's loop, e.g. through ``RunningEmulator.call``).

        A network fault between some clients and the API server; everyone else is served as
        usual. :meth:`stop_watches` is for shutdown: it ends every watch for good.
        """
        self.partitions.append(match)
        self._wake_watches()

        def heal() -> None:
            if match in self.partitions:
                self.partitions.remove(match)

        return heal

    def _cut_off(self, raw: aiohttp.web.BaseRequest) -> bool:
        return any(match(raw) for match in self.partitions)

    def _wake_watches(self) -> None:
        """Let every open watch look at its stop condition now."""
        changed, self.store.changed = self.store.changed, asyncio.Event()
        changed.set()

    # --- CRDs: served while stored ----------------------------------------------------------

    def _accept_crd(self, key: Key, obj: dict[str, Any]) -> None:
        if key[0] == kube_crds.CRD_RESOURCE and not (obj.get("status") or {}).get("conditions"):
            obj["status"] = kube_crds.accepted_status(obj, now_rfc3339())

    def _admit_custom_resource(self, key: Key, obj: dict[str, Any]) -> None:
        """Prune, default and validate a custom resource against its CRD's schema."""
        served = self.store.crds.get(key[0])
        if served is None or not served.schema:
            return
        pruned = dict(kube_schema.prune(obj, served.schema, root=True))  # may be obj itself
        obj.clear()
        obj.update(kube_schema.apply_defaults(pruned, served.schema))
        errors = kube_schema.validation_errors(obj, served.schema) if self.validate else []
        if errors:
            raise ApiError(
                422,
                "Invalid",
                f'{served.info.kind}.{key[0].group} "{key[2]}" is invalid: ' + "; ".join(errors),
                name=key[2],
                kind=served.info.kind,
                causes=[{"reason": "FieldValueInvalid", "message": error} for error in errors],
            )

    def _serve_stored_crd(self, key: Key, obj: dict[str, Any]) -> None:
        if key[0] != kube_crds.CRD_RESOURCE:
            return
        self._unserve_crd(obj)
        for served in kube_crds.served_versions(obj):
            self.resources[served.resource] = served.info
            self.store.crds[served.resource] = served

    def _drop_removed_crd(self, key: Key, obj: dict[str, Any]) -> None:
        if key[0] == kube_crds.CRD_RESOURCE:
            for resource in self._unserve_crd(obj, delete_objects=True):
                del self.resources[resource]

    def _unserve_crd(self, crd: dict[str, Any], delete_objects: bool = False) -> list[Any]:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        resources = [r for r in self.store.crds if (r.group, r.plural) == (group, plural)]
        for resource in resources:
            for item_key, _ in list(self.store.items(resource)) if delete_objects else []:
                self.store.delete(item_key)
            del self.store.crds[resource]
        return resources

    # --- HTTP -------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.path.startswith("/openapi/v3"):
            return self._serve_openapi(raw.path.removeprefix("/openapi/v3").strip("/"))
        target = parse_api_path(raw.path)
        if target is None:
            if len(self._requests) > KMOCK_REQUESTS_KEPT:  # kmock keeps every request it served
                del self._requests[: KMOCK_REQUESTS_KEPT // 2]
            return await super().__call__(raw)
        try:
            if self._cut_off(raw):
                raise ApiError(503, "ServiceUnavailable", "cut off from the API (partition)")
            response = await self._serve(raw, target)
        except ApiError as exc:
            response = _error(exc)
        except SelectorError as exc:
            response = _error(ApiError(400, "BadRequest", str(exc)))
        except PatchTestFailed as exc:
            response = _error(ApiError(422, "Invalid", f"the test operation failed: {exc}"))
        except PatchError as exc:
            response = _error(ApiError(422, "Invalid", str(exc)))
        self.api_log.append((raw.method, raw.path_qs, response.status))
        return response

    async def _serve(self, raw: aiohttp.web.BaseRequest, target: ApiPath) -> Any:
        store, resource, key = self.store, target.resource, target.key
        if target.namespace is not None and not store.info(resource).namespaced:
            raise ApiError(404, "NotFound", f"{resource.plural} are not namespaced")
        params, method, sub = raw.query, raw.method, target.subresource
        if sub is not None and sub not in store.info(resource).subresources:
            raise ApiError(404, "NotFound", f"{resource.plural} have no {sub} subresource")
        data = _json_body(await raw.read())
        dry_run = "dryRun" in params
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._serve_watch(raw, target)
        if method == "GET" and target.name is None:
            objects = [obj for _, obj in self._selected(raw, target)]
            return self._objects_response(raw, resource, objects, single=False)
        if method == "GET" and sub == "scale":
            return aiohttp.web.json_response(scale_of(store, key, store.require(key)))
        if method == "GET" and sub in (None, "status"):
            return self._objects_response(raw, resource, [store.require(key)], single=True)
        if method == "POST" and target.name is None:
            self._strict_fields(raw, resource, data)
            created = store.create(resource, target.namespace, data, dry_run=dry_run)
            return aiohttp.web.json_response(created, status=201)
        if method in ("PUT", "PATCH") and target.name and sub == "scale":
            if method == "PATCH":
                current = scale_of(store, key, store.require(key))
                data = apply_patch(current, data, raw.headers.get("Content-Type", ""))
            return aiohttp.web.json_response(write_scale(store, key, data, dry_run=dry_run))
        if method in ("PUT", "PATCH") and target.name and sub in (None, "status"):
            if method == "PUT":
                changed = lambda _current: data  # noqa: E731
            else:
                content_type = self._patch_type(raw, resource)
                changed = lambda current: apply_patch(current, data, content_type)  # noqa: E731

            def mutate(current: dict[str, Any]) -> dict[str, Any]:
                return self._strict_fields(raw, resource, changed(current))

            updated = store.update(key, mutate, subresource=sub, dry_run=dry_run)
            return aiohttp.web.json_response(updated)
        if method == "DELETE" and target.name and sub is None:
            obj, gone = store.delete(key, _delete_options(params, data), dry_run=dry_run)
            return aiohttp.web.json_response(obj, status=200 if gone else 202)
        if method == "DELETE" and target.name is None:
            for item_key, _ in self._selected(raw, target):
                if store.get(item_key) is not None:  # a cascade may have taken it already
                    store.delete(item_key, _delete_options(params, data), dry_run=dry_run)
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw.path}")

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        """``/openapi/v3`` (the index) and ``/openapi/v3/apis/G/V`` for the served CRDs."""
        docs = kube_openapi.documents(self.store.crds.values())
        if not path:
            return aiohttp.web.json_response(kube_openapi.root(docs))
        if path in docs:
            return aiohttp.web.json_response(docs[path])
        return _error(ApiError(404, "NotFound", f"no OpenAPI document for {path}"))

    def _strict_fields(
        self, raw: aiohttp.web.BaseRequest, resource: kmock.resource, obj: dict[str, Any]
    ) -> dict[str, Any]:
        """``fieldValidation=Strict`` (kubectl's default): a custom resource with fields its
        CRD's schema does not declare is refused (400) instead of pruned. Returns ``obj``."""
        served = self.store.crds.get(resource)
        if raw.query.get("fieldValidation") != "Strict" or served is None or not served.schema:
            return obj
        unknown = kube_schema.unknown_fields(obj, served.schema)
        if unknown:
            kind = served.info.kind
            raise ApiError(
                400,
                "BadRequest",
                f'{kind} in version "{resource.version}" cannot be handled as a {kind}: '
                "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown),
            )
        return obj

    def _patch_type(self, raw: aiohttp.web.BaseRequest, resource: kmock.resource) -> str:
        """The patch content type, refused (415) where a real API server refuses it."""
        content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == APPLY_PATCH:
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
        if content_type == STRATEGIC_PATCH and resource in self.store.crds:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json",
            )
        return content_type

    def _selected(
        self, raw: aiohttp.web.BaseRequest, target: ApiPath
    ) -> list[tuple[Key, dict[str, Any]]]:
        predicate = object_selector(raw.query.get("labelSelector"), raw.query.get("fieldSelector"))
        items = self.store.items(target.resource, target.namespace)
        return [(key, obj) for key, obj in items if predicate(obj)]

    def _objects_response(
        self,
        raw: aiohttp.web.BaseRequest,
        resource: kmock.resource,
        objects: list[dict[str, Any]],
        *,
        single: bool,
    ) -> aiohttp.web.Response:
        if kube_tables.wants_table(raw.headers.get("Accept", "")):
            return aiohttp.web.json_response(self._table(raw, resource, objects))
        if single:
            return aiohttp.web.json_response(objects[0])
        return aiohttp.web.json_response(
            {
                "apiVersion": self.store.api_version(resource),
                "kind": f"{self.store.info(resource).kind}List",
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": objects,
            }
        )

    def _table(
        self, raw: aiohttp.web.BaseRequest, resource: kmock.resource, objects: list[dict[str, Any]]
    ) -> dict[str, Any]:
        served = self.store.crds.get(resource)
        return kube_tables.table(
            objects,
            served.columns if served is not None else None,
            plural=resource.plural,
            resource_version=str(self.store.rv),
            include_object=raw.query.get("includeObject", "Metadata"),
        )

    async def _serve_watch(
        self, raw: aiohttp.web.BaseRequest, target: ApiPath
    ) -> aiohttp.web.StreamResponse:
        watch = kube_watch.plan_watch(
            self.store, target.resource, target.namespace, target.name, raw.query
        )
        if kube_tables.wants_table(raw.headers.get("Accept", "")):
            render = lambda obj: self._table(raw, target.resource, [obj])  # noqa: E731
        else:
            render = lambda obj: obj  # noqa: E731
        response = aiohttp.web.StreamResponse(headers={"Content-Type": kube_watch.CONTENT_TYPE})
        await response.prepare(raw)
        self.open_watches.append(raw.path_qs)
        try:
            await kube_watch.stream_watch(
                self.store,
                watch,
                response,
                render,
                lambda: self._stopping or self._cut_off(raw),
            )
        finally:
            self.open_watches.remove(raw.path_qs)
        return response


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from exc


def _delete_options(params: Any, body: Any) -> dict[str, Any]:
    """DeleteOptions from the body, overridden by query parameters (as kubectl sends them)."""
    options = dict(body) if isinstance(body, dict) else {}
    if "gracePeriodSeconds" in params:
        options["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
    if "propagationPolicy" in params:
        options["propagationPolicy"] = params["propagationPolicy"]
    return options


def _error(error: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(error.status(), status=error.code)
