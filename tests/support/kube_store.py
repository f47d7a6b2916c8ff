"""The object store behind the emulated Kubernetes API: the semantics, not the HTTP.

It keeps objects in kmock's ``ObjectsArray`` (so ``emulator.objects[...]`` works in tests) and
adds what a real API server does on writes: uid, creationTimestamp, a global resourceVersion,
generation bumps on spec changes only, 409 on stale resourceVersion, status/main-resource
separation, finalizers with deletionTimestamp, graceful deletion of pods bound to a node,
ownerReference garbage collection, and a log of watch events with resourceVersions.

Graceful pod deletion: a Pod with ``spec.nodeName`` and a non-terminal phase is not removed by
DELETE; it gets ``deletionTimestamp`` (+ grace period) and stays until a kubelet (the test pod
runner) deletes it again with ``gracePeriodSeconds=0``. Any other Pod goes at once.
Garbage collection is immediate and background-style: removing an owner deletes its dependents
(which honour their own finalizers); ``Orphan`` strips the references instead; ``Foreground``
is treated as ``Background``. ``garbage_collection = False`` turns it off (dependents stay, as
they do for a while on a cluster whose garbage collector lags), to show what our own cleanup
leaves behind.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import dataclasses
import datetime
import secrets
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kmock

from tests.support.kube_crds import ScalePaths, ServedVersion

Key = tuple[kmock.resource, str | None, str]
HISTORY_KEPT = 20  # versions kept per object in kmock's history, to bound memory
PODS = kmock.resource("", "v1", "pods")
NAMESPACES = kmock.resource("", "v1", "namespaces")
PROTECTED_METADATA = (
    "uid",
    "name",
    "namespace",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


class ApiError(Exception):
    """An error the API reports as a ``Status`` object with an HTTP code and a reason."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The ``v1 Status`` body of this error."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(resource: kmock.resource, name: str) -> ApiError:
    """404 for a missing object, worded as the API server words it."""
    return ApiError(404, "NotFound", f'{resource.plural} "{name}" not found', name=name)


def now_rfc3339(offset_seconds: float = 0) -> str:
    """The current UTC time (plus an offset) in Kubernetes' timestamp format."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """One change: the object before (None on create) and after (its last state on delete)."""

    rv: int
    type: str
    resource: kmock.resource
    namespace: str | None
    old: dict[str, Any] | None
    new: dict[str, Any]


class KubeStore:
    """Stored objects plus the rules of writes; every method runs on the emulator's loop."""

    def __init__(self, resources: kmock.ResourcesArray, objects: kmock.ObjectsArray) -> None:
        self.resources, self.objects = resources, objects
        self.crds: dict[kmock.resource, ServedVersion] = {}
        self.rv = 0
        self.log: list[WatchEvent] = []
        self.log_limit = 20_000
        self.oldest_rv = 0  # watches from before this resourceVersion get 410 Gone
        self.changed = asyncio.Event()
        self._trimmed = 0  # events dropped from the head of the log
        self._uids: dict[str, Key] = {}
        self.garbage_collection = True
        # Hooks for resource-specific behaviour (CRDs). Admission may edit an object about to be
        # written (before no-op and generation checks) or refuse it with an ApiError; the others
        # hear about stored and removed objects.
        self.admit: list[Callable[[Key, dict[str, Any]], None]] = []
        self.after_store: list[Callable[[Key, dict[str, Any]], None]] = []
        self.after_remove: list[Callable[[Key, dict[str, Any]], None]] = []

    # --- reading -------------------------------------------------------------------------------

    def info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        """Discovery info of a served resource, or 404."""
        if resource not in self.resources:
            raise ApiError(404, "NotFound", f"the server could not find the resource {resource}")
        return self.resources[resource]

    def api_version(self, resource: kmock.resource) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return resource.version if not resource.group else f"{resource.group}/{resource.version}"

    def get(self, key: Key) -> dict[str, Any] | None:
        """The live object under ``key`` (never mutate it), or None."""
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].raw
        return None

    def require(self, key: Key) -> dict[str, Any]:
        """The live object under ``key``, or 404."""
        obj = self.get(key)
        if obj is None:
            raise not_found(key[0], key[2])
        return obj

    def items(
        self, resource: kmock.resource, namespace: str | None = None
    ) -> Iterator[tuple[Key, dict[str, Any]]]:
        """Live objects of a resource (in one namespace, or all), sorted by namespace and name."""
        keys = [
            key
            for key in self.objects
            if key[0] == resource and (namespace is None or key[1] == namespace)
        ]
        for key in sorted(keys, key=lambda k: (k[1] or "", k[2])):
            obj = self.get(key)
            if obj is not None:
                yield key, obj

    def scale_paths(self, resource: kmock.resource) -> ScalePaths:
        """Where the ``/scale`` subresource reads and writes, or 404 without one."""
        if resource in self.crds and self.crds[resource].scale is not None:
            return self.crds[resource].scale
        if "scale" in self.info(resource).subresources and resource not in self.crds:
            return ScalePaths()
        raise ApiError(404, "NotFound", f"{resource.plural} has no scale subresource")

    def events_since(self, position: int) -> tuple[list[WatchEvent], int]:
        """Events logged at or after an absolute log position, and the position after them."""
        start = max(position - self._trimmed, 0)
        return self.log[start:], self._trimmed + len(self.log)

    def position_after(self, rv: int) -> int:
        """The absolute log position of the first event newer than ``rv``."""
        return self._trimmed + bisect.bisect_right(self.log, rv, key=lambda event: event.rv)

    # --- writing -------------------------------------------------------------------------------

    def create(
        self, resource: kmock.resource, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POST: a new object with server-set metadata; 409 if the name is taken."""
        info = self.info(resource)
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object with metadata")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        namespace = self._namespace_of(info, namespace, meta)
        name = meta.get("name") or self._generate_name(meta)
        key = (resource, namespace, name)
        if self.get(key) is not None:
            raise ApiError(
                409, "AlreadyExists", f'{resource.plural} "{name}" already exists', name=name
            )
        obj["apiVersion"], obj["kind"] = self.api_version(resource), info.kind
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(field, None)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        meta["generation"] = 1
        if namespace is not None:
            meta["namespace"] = namespace
        if "status" in info.subresources:
            obj.pop("status", None)
        if resource == PODS:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif resource == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        for hook in self.admit:
            hook(key, obj)
        if dry_run:
            return obj
        self._commit("ADDED", key, None, obj)
        if meta.get("ownerReferences"):
            self._collect_later(key, meta["uid"])
        return obj

    def update(
        self,
        key: Key,
        mutate: Callable[[dict[str, Any]], Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT/PATCH: ``mutate`` gets a copy of the object and returns the desired object."""
        current = self.require(key)
        desired = mutate(copy.deepcopy(current))
        if not isinstance(desired, dict) or not isinstance(desired.get("metadata", {}), dict):
            raise ApiError(422, "Invalid", "the result must be an object with metadata")
        wanted_rv = desired.get("metadata", {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[0].plural} "{key[2]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                name=key[2],
            )
        info = self.info(key[0])
        has_status = "status" in info.subresources
        if subresource == "status":
            new = copy.deepcopy(current)
            _put(new, "status", desired.get("status"))
        else:
            new = desired
            new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
            meta = new.setdefault("metadata", {})
            for field in PROTECTED_METADATA:
                _put(meta, field, current["metadata"].get(field))
            for field in ("managedFields", "selfLink"):
                meta.pop(field, None)
            if has_status:
                _put(new, "status", current.get("status"))
            if current["metadata"].get("deletionTimestamp"):  # no new finalizers while deleting
                old_finalizers = current["metadata"].get("finalizers") or []
                kept = [f for f in meta.get("finalizers") or [] if f in old_finalizers]
                _put(meta, "finalizers", kept or None)
        for hook in self.admit:
            hook(key, new)
        if _spec_of(new, has_status) != _spec_of(current, has_status):
            new["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1
        if new == current or dry_run:
            return new
        if _ready_to_go(new):
            return self._remove(key, new)
        self._commit("MODIFIED", key, current, new)
        return new

    def delete(
        self, key: Key, options: dict[str, Any] | None = None, *, dry_run: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """DELETE: returns the object and whether it is gone (False: finalizers or grace)."""
        options = options or {}
        current = self.require(key)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            expected = preconditions.get(field)
            if expected and expected != current["metadata"].get(field):
                raise ApiError(409, "Conflict", f"Precondition failed: {field} is {expected!r}")
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if dry_run:
            return current, False
        grace = options.get("gracePeriodSeconds")
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            if grace == 0 and meta.get("deletionGracePeriodSeconds"):  # the kubelet is done
                new = copy.deepcopy(current)
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                if _ready_to_go(new):
                    return self._remove(key, new), True
                self._commit("MODIFIED", key, current, new)
                return new, False
            return current, False
        grace = self._grace_for(key, current, grace)
        if policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        if grace or meta.get("finalizers"):
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now_rfc3339(grace or 0)
            new["metadata"]["deletionGracePeriodSeconds"] = grace or 0
            self._commit("MODIFIED", key, current, new)
            return new, False
        return self._remove(key, current), True

    # --- internals -----------------------------------------------------------------------------

    def _namespace_of(
        self, info: kmock.ResourceInfo, namespace: str | None, meta: dict[str, Any]
    ) -> str | None:
        if not info.namespaced:
            meta.pop("namespace", None)
            return None
        if namespace and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        namespace = namespace or meta.get("namespace")
        if not namespace:
            raise ApiError(400, "BadRequest", "a namespace is required for this resource")
        return namespace

    def _generate_name(self, meta: dict[str, Any]) -> str:
        prefix = meta.get("generateName")
        if not prefix:
            raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
        alphabet = string.ascii_lowercase + string.digits
        return prefix + "".join(secrets.choice(alphabet) for _ in range(5))

    def _grace_for(self, key: Key, pod: dict[str, Any], requested: Any) -> int:
        """Seconds of graceful deletion: only for pods a kubelet runs (bound, not finished)."""
        if key[0] != PODS or not (pod.get("spec") or {}).get("nodeName"):
            return 0
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(int(requested), 0)
        return int((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)

    def _commit(self, kind: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        if key in self.objects:
            history = self.objects[key].history
            history.append(new)
            if len(history) > HISTORY_KEPT:
                del history[:-HISTORY_KEPT]
        else:
            self.objects[key] = new
        self._uids[new["metadata"]["uid"]] = key
        self._log(kind, key, old, new)
        for hook in self.after_store:
            hook(key, new)

    def _remove(self, key: Key, obj: dict[str, Any], policy: str = "Background") -> dict[str, Any]:
        final = copy.deepcopy(obj)
        self.rv += 1
        final["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key].delete()
        uid = final["metadata"]["uid"]
        self._uids.pop(uid, None)
        self._log("DELETED", key, obj, final)
        for hook in self.after_remove:
            hook(key, final)
        if key[0] == NAMESPACES:
            self._delete_namespace_content(key[2])
        if policy != "Orphan" and self.garbage_collection:
            self._collect_dependents(uid)
        return final

    def _log(self, kind: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.log.append(WatchEvent(self.rv, kind, key[0], key[1], old, new))
        if len(self.log) > self.log_limit:
            dropped = len(self.log) - self.log_limit // 2
            self.oldest_rv = self.log[dropped].rv - 1
            del self.log[:dropped]
            self._trimmed += dropped
        self.changed.set()
        self.changed = asyncio.Event()

    def _dependents(self, uid: str) -> list[Key]:
        return [
            key
            for key, obj in self._all_live()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _all_live(self) -> list[tuple[Key, dict[str, Any]]]:
        return [(key, obj) for key in list(self.objects) if (obj := self.get(key)) is not None]

    def _collect_dependents(self, uid: str) -> None:
        for key in self._dependents(uid):
            obj = self.get(key)
            if obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") in self._uids for ref in refs if ref.get("uid") != uid):
                self._strip_owner(key, uid)  # other owners remain: only drop the dead reference
            else:
                self.delete(key, {"propagationPolicy": "Background"})

    def _orphan_dependents(self, uid: str) -> None:
        for key in self._dependents(uid):
            self._strip_owner(key, uid)

    def _strip_owner(self, key: Key, uid: str) -> None:
        def strip(obj: dict[str, Any]) -> dict[str, Any]:
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            _put(obj["metadata"], "ownerReferences", refs or None)
            return obj

        self.update(key, strip)

    def _collect_later(self, key: Key, uid: str) -> None:
        """Like the real GC, soon delete an object created with owners that do not exist."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(0.5, self._collect_if_orphaned, key, uid)

    def _collect_if_orphaned(self, key: Key, uid: str) -> None:
        obj = self.get(key)
        if obj is None or obj["metadata"]["uid"] != uid or not self.garbage_collection:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not any(ref.get("uid") in self._uids for ref in refs):
            self.delete(key, {"propagationPolicy": "Background"})

    def _delete_namespace_content(self, namespace: str) -> None:
        for key, _ in self._all_live():
            if key[1] == namespace and self.get(key) is not None:
                self.delete(key)


def _put(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set a key, or remove it when the value is None."""
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _spec_of(obj: dict[str, Any], has_status: bool) -> dict[str, Any]:
    """What generation tracks: all but metadata (and status with a status subresource)."""
    skipped = {"metadata", "apiVersion", "kind"} | ({"status"} if has_status else set())
    return {key: value for key, value in obj.items() if key not in skipped}


def _ready_to_go(obj: dict[str, Any]) -> bool:
    """Deleting, no finalizers left, and no grace period still running for a kubelet."""
    meta = obj["metadata"]
    return bool(
        meta.get("deletionTimestamp")
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )
