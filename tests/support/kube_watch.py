"""Watch streams of the emulated API: which events a watcher gets, and streaming them.

A watch with no ``resourceVersion`` (or ``0``, or ``sendInitialEvents=true``) starts with an
``ADDED`` event per current object, then follows changes; with a resourceVersion it gets only
the changes after it, or an ``ERROR`` 410 when that version is older than the kept log.
With selectors, an object that starts matching appears as ``ADDED`` and one that stops matching
as ``DELETED``, as the real API does. The stream ends at ``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web
import kmock

from tests.support.kube_selectors import Predicate, object_selector
from tests.support.kube_store import ApiError, KubeStore, WatchEvent

CONTENT_TYPE = "application/json"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclasses.dataclass
class Watch:
    """What one watch request asks for, resolved before its response starts."""

    resource: kmock.resource
    namespace: str | None
    predicate: Predicate
    position: int  # absolute position in the store's event log to follow from
    snapshot: list[dict[str, Any]]  # objects announced as ADDED first
    expired_since: str | None  # the too-old resourceVersion asked for (answered with 410)
    initial_events_end: bool  # a BOOKMARK after the snapshot (sendInitialEvents)
    deadline: float | None  # loop time at which the stream ends


def plan_watch(
    store: KubeStore,
    resource: kmock.resource,
    namespace: str | None,
    name: str | None,
    params: Mapping[str, str],
) -> Watch:
    """Resolve a watch request; raises (400) before any byte is streamed."""
    predicate = object_selector(params.get("labelSelector"), params.get("fieldSelector"))
    if name is not None:
        selected = predicate
        predicate = lambda obj: obj["metadata"]["name"] == name and selected(obj)  # noqa: E731
    timeout = params.get("timeoutSeconds")
    deadline = asyncio.get_running_loop().time() + float(timeout) if timeout else None
    since = params.get("resourceVersion") or ""
    initial_events = params.get("sendInitialEvents") == "true"
    if since in ("", "0") or initial_events:
        snapshot = [obj for _, obj in store.items(resource, namespace) if predicate(obj)]
        position, expired = store.position_after(store.rv), None
    else:
        try:
            rv = int(since)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
        snapshot, position = [], store.position_after(rv)
        expired = since if rv < store.oldest_rv else None
    return Watch(
        resource, namespace, predicate, position, snapshot, expired, initial_events, deadline
    )


async def stream_watch(
    store: KubeStore,
    watch: Watch,
    response: aiohttp.web.StreamResponse,
    render: Callable[[dict[str, Any]], dict[str, Any]],
    stopping: Callable[[], bool],
) -> None:
    """Write a prepared watch response's events until the deadline or ``stopping()``."""

    async def send(kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("BOOKMARK", "ERROR"):
            obj = render(obj)
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    if watch.expired_since is not None:
        expired = ApiError(410, "Expired", f"too old resource version: {watch.expired_since}")
        await send("ERROR", expired.status())
        return
    for obj in watch.snapshot:
        await send("ADDED", obj)
    if watch.initial_events_end:
        await send("BOOKMARK", bookmark(store, watch.resource))
    loop = asyncio.get_running_loop()
    position = watch.position
    while not stopping():
        changed = store.changed  # taken before reading: a change after the read wakes us
        events, position = store.events_since(position)
        for event in events:
            kind = visible_as(event, watch)
            if kind is not None:
                await send(kind, event.new)
        remaining = None if watch.deadline is None else watch.deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=min(remaining or 5.0, 5.0))


def visible_as(event: WatchEvent, watch: Watch) -> str | None:
    """How a watcher sees an event: objects moving into or out of its selector appear/vanish."""
    if event.resource != watch.resource:
        return None
    if watch.namespace is not None and event.namespace != watch.namespace:
        return None
    was = event.old is not None and watch.predicate(event.old)
    now = watch.predicate(event.new)
    if event.type == "DELETED":
        return "DELETED" if was or now else None
    if was and now:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if was else None


def bookmark(store: KubeStore, resource: kmock.resource) -> dict[str, Any]:
    """The BOOKMARK that ends the initial events of a ``sendInitialEvents`` watch."""
    return {
        "kind": store.info(resource).kind,
        "apiVersion": store.api_version(resource),
        "metadata": {
            "resourceVersion": str(store.rv),
            "annotations": {INITIAL_EVENTS_END: "true"},
        },
    }
