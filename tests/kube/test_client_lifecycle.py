"""Object lifecycle on the emulated API: generation, status, scale, finalizers, GC, pod grace."""

from __future__ import annotations

import time

import pytest
from kubernetes.client import ApiException, CoordinationV1Api, CoreV1Api, CustomObjectsApi

from tests.kube.common import WIDGETS, eventually

GROUP, VERSION, PLURAL = WIDGETS
MERGE = "application/merge-patch+json"


def create_widget(api, name: str = "w", **spec: object) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"replicas": 1, **spec},
        "status": {"ignored": "on create"},
    }
    return CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body
    )


def patch_widget(api, body: dict, subresource: str | None = None, name: str = "w") -> dict:
    custom = CustomObjectsApi(api)
    if subresource == "status":
        return custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, name, body
        )
    return custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name, body)


def read_widget(api, name: str = "w") -> dict:
    return CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name
    )


def owner_ref(obj: dict, kind: str, api_version: str) -> dict:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"]}


def test_generation_is_bumped_by_spec_changes_only(api):
    created = create_widget(api)
    assert created["metadata"]["generation"] == 1
    assert "status" not in created, "status is dropped on create with a status subresource"

    labelled = patch_widget(api, {"metadata": {"labels": {"a": "b"}}})
    with_status = patch_widget(api, {"status": {"phase": "Running"}}, subresource="status")
    assert labelled["metadata"]["generation"] == with_status["metadata"]["generation"] == 1

    changed = patch_widget(api, {"spec": {"replicas": 2}})
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(
        with_status["metadata"]["resourceVersion"]
    )


def test_a_no_op_write_keeps_the_resource_version(api):
    created = create_widget(api)
    again = patch_widget(api, {"spec": {"replicas": 1}})
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_status_subresource_separates_status_from_the_rest(api):
    create_widget(api)

    main = patch_widget(api, {"spec": {"colour": "red"}, "status": {"phase": "Sneaky"}})
    status = patch_widget(
        api, {"spec": {"colour": "blue"}, "status": {"phase": "Running"}}, subresource="status"
    )

    assert "status" not in main, "writes to the main resource ignore status"
    assert status["spec"]["colour"] == "red", "writes to /status ignore everything else"
    assert read_widget(api)["status"] == {"phase": "Running"}


def test_status_subresource_replace_and_read(api):
    create_widget(api)
    current = read_widget(api)
    current["status"] = {"phase": "Ready"}
    custom = CustomObjectsApi(api)
    custom.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w", current)
    fetched = custom.get_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w")
    assert fetched["status"] == {"phase": "Ready"}


def test_scale_subresource_maps_spec_and_status_replicas(api):
    create_widget(api, replicas=2)
    patch_widget(api, {"status": {"replicas": 1, "selector": "app=w"}}, subresource="status")
    custom = CustomObjectsApi(api)

    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, "default", PLURAL, "w")
    assert scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 1, "selector": "app=w"}

    custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, "default", PLURAL, "w", {"spec": {"replicas": 5}}
    )
    widget = read_widget(api)
    assert widget["spec"]["replicas"] == 5
    assert widget["metadata"]["generation"] == 2


def test_finalizers_hold_the_object_until_removed(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "held", "finalizers": ["test/hold"]}}
    )

    core.delete_namespaced_config_map("held", "default")
    held = core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None

    core.patch_namespaced_config_map(
        "held", "default", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    with pytest.raises(ApiException) as error:
        core.read_namespaced_config_map("held", "default")
    assert error.value.status == 404


def test_no_finalizers_can_be_added_while_deleting(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "x", "finalizers": ["a"]}})
    core.delete_namespaced_config_map("x", "default")
    patched = core.patch_namespaced_config_map(
        "x", "default", {"metadata": {"finalizers": ["a", "b"]}}, _content_type=MERGE
    )
    assert patched.metadata.finalizers == ["a"]


def test_deleting_an_owner_collects_dependents_down_the_chain(api):
    widget = create_widget(api)
    core, leases = CoreV1Api(api), CoordinationV1Api(api)
    pod = core.create_namespaced_pod(
        "default",
        {
            "metadata": {
                "name": "w-0",
                "ownerReferences": [owner_ref(widget, "Widget", f"{GROUP}/{VERSION}")],
            },
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        },
    )
    leases.create_namespaced_lease(
        "default",
        {"metadata": {"name": "w-0", "ownerReferences": [owner_ref(pod.to_dict(), "Pod", "v1")]}},
    )

    CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")

    assert core.list_namespaced_pod("default").items == []
    assert leases.list_namespaced_lease("default").items == []


def test_dependents_with_another_live_owner_survive(api):
    core = CoreV1Api(api)
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "one"}})
    second = core.create_namespaced_config_map("default", {"metadata": {"name": "two"}})
    refs = [owner_ref(o.to_dict(), "ConfigMap", "v1") for o in (first, second)]
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "dep", "ownerReferences": refs}}
    )

    core.delete_namespaced_config_map("one", "default")

    dependent = core.read_namespaced_config_map("dep", "default")
    assert [ref.name for ref in dependent.metadata.owner_references] == ["two"]


def test_orphan_propagation_keeps_dependents(api):
    core = CoreV1Api(api)
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = owner_ref(owner.to_dict(), "ConfigMap", "v1")
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "dep", "ownerReferences": [ref]}}
    )

    core.delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")

    assert not core.read_namespaced_config_map("dep", "default").metadata.owner_references


def test_objects_created_with_missing_owners_are_collected(api):
    core = CoreV1Api(api)
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "no-such-uid"}
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "orphan", "ownerReferences": [ghost]}}
    )
    eventually(lambda: not core.list_namespaced_config_map("default").items, timeout=5)


def test_garbage_collection_can_be_turned_off(cluster, api):
    cluster.call(setattr, cluster.emulator.store, "garbage_collection", False)
    core = CoreV1Api(api)
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = owner_ref(owner.to_dict(), "ConfigMap", "v1")
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "no-such-uid"}
    for name, refs in (("dep", [ref]), ("orphan", [ghost])):
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "ownerReferences": refs}}
        )

    core.delete_namespaced_config_map("owner", "default")

    time.sleep(1.0)  # the collector of objects created with missing owners waits 0.5 s
    names = sorted(c.metadata.name for c in core.list_namespaced_config_map("default").items)
    assert names == ["dep", "orphan"]


def test_unbound_pods_go_at_once_bound_pods_wait_for_the_kubelet(api):
    core = CoreV1Api(api)
    spec = {"containers": [{"name": "c", "image": "x"}]}
    core.create_namespaced_pod("default", {"metadata": {"name": "free"}, "spec": spec})
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "bound"}, "spec": spec | {"nodeName": "node-1"}}
    )
    core.patch_namespaced_pod_status("bound", "default", {"status": {"phase": "Running"}})

    core.delete_namespaced_pod("free", "default")
    core.delete_namespaced_pod("bound", "default")

    names = [pod.metadata.name for pod in core.list_namespaced_pod("default").items]
    assert names == ["bound"]
    terminating = core.read_namespaced_pod("bound", "default")
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 30

    core.delete_namespaced_pod("bound", "default", grace_period_seconds=0)
    assert core.list_namespaced_pod("default").items == []


def test_new_pods_are_pending(api):
    core = CoreV1Api(api)
    pod = core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        },
    )
    assert pod.status.phase == "Pending"
