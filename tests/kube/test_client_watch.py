"""Watches on the emulated API: from a resourceVersion, initial events, selectors, timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import watch
from kubernetes.client import ApiException, CoreV1Api


def events(core: CoreV1Api, **kwargs: object) -> list[tuple[str, str, str]]:
    """(type, name, data.v) of every event a watch gets before its server-side timeout."""
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", timeout_seconds=1, **kwargs
    )
    return [
        (
            e["type"],
            e["raw_object"]["metadata"]["name"],
            (e["raw_object"].get("data") or {}).get("v"),
        )
        for e in stream
    ]


def test_watch_from_a_resource_version_gets_only_later_events_in_order(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}, "data": {"v": "1"}})
    since = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("a", "default", {"data": {"v": "2"}})
    core.delete_namespaced_config_map("b", "default")

    assert events(core, resource_version=since) == [
        ("ADDED", "b", "1"),
        ("MODIFIED", "a", "2"),
        ("DELETED", "b", "1"),
    ]


def test_watch_without_resource_version_starts_with_the_current_objects(api):
    core = CoreV1Api(api)
    for name in ("a", "b"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    core.delete_namespaced_config_map("a", "default")

    assert events(core) == [("ADDED", "b", None)]


def test_watch_events_carry_increasing_resource_versions(api):
    core = CoreV1Api(api)
    since = core.list_namespaced_config_map("default").metadata.resource_version
    for value in "123":
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{value}"}})
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=1
    )
    versions = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in stream]
    assert len(versions) == 3 and versions == sorted(versions) and versions[0] > int(since)


def test_watch_with_a_selector_sees_objects_enter_and_leave_it(api):
    core = CoreV1Api(api)
    since = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"x": "1"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"x": "2"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})

    seen = events(core, resource_version=since, label_selector="x=1")

    assert seen == [("ADDED", "a", None), ("DELETED", "a", None), ("ADDED", "a", None)]


def test_watch_honours_timeout_seconds(api):
    core = CoreV1Api(api)
    started = time.monotonic()
    assert events(core) == []
    assert 0.8 < time.monotonic() - started < 5


def test_watch_sees_changes_made_while_it_is_open(api):
    core = CoreV1Api(api)
    since = core.list_namespaced_config_map("default").metadata.resource_version
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
    )

    def create_later() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map("default", {"metadata": {"name": "late"}})

    threading.Thread(target=create_later).start()
    started = time.monotonic()
    first = next(iter(stream))
    assert first["type"] == "ADDED" and first["raw_object"]["metadata"]["name"] == "late"
    assert time.monotonic() - started < 3, "delivered as it happened, not at the timeout"


def test_watch_from_an_expired_resource_version_is_410(api, cluster):
    core = CoreV1Api(api)
    cluster.call(setattr, cluster.emulator.store, "log_limit", 4)
    for index in range(10):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{index}"}})

    with pytest.raises(ApiException) as error:
        events(core, resource_version="1")
    assert error.value.status == 410
