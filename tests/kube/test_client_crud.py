"""The emulated API through the official ``kubernetes`` client: objects, selectors, conflicts."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client import ApiException, CoreV1Api, CustomObjectsApi

from tests.kube.common import WIDGETS


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def widget(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "test.kubechat.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_create_sets_server_metadata_and_answers_201(api):
    core = CoreV1Api(api)
    first = core.create_namespaced_config_map("default", configmap("a", x="1"))
    second = core.create_namespaced_config_map("default", configmap("b"))

    assert first is not None, "201 with the object: the client returns it"
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    fetched = core.read_namespaced_config_map("a", "default")
    assert fetched.data == {"x": "1"}
    assert fetched.metadata.resource_version == first.metadata.resource_version


def test_create_of_an_existing_name_is_409(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", configmap("a"))
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("default", configmap("a"))
    assert error.value.status == 409
    assert json.loads(error.value.body)["reason"] == "AlreadyExists"


def test_missing_object_is_404_not_found(api):
    with pytest.raises(ApiException) as error:
        CoreV1Api(api).read_namespaced_config_map("nope", "default")
    assert error.value.status == 404
    assert json.loads(error.value.body)["reason"] == "NotFound"


def test_generate_name_makes_unique_names(api):
    core = CoreV1Api(api)
    made = [
        core.create_namespaced_config_map("default", {"metadata": {"generateName": "job-"}})
        for _ in range(3)
    ]
    names = {item.metadata.name for item in made}
    assert len(names) == 3 and all(name.startswith("job-") for name in names)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=chat", {"a", "b"}),
        ("app==chat,tier=web", {"a"}),
        ("app!=chat", {"c"}),
        ("tier in (web,db)", {"a", "c"}),
        ("tier notin (web)", {"b", "c"}),
        ("tier", {"a", "c"}),
        ("!tier", {"b"}),
    ],
)
def test_list_with_label_selectors(api, selector, expected):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", configmap("a", {"app": "chat", "tier": "web"}))
    core.create_namespaced_config_map("default", configmap("b", {"app": "chat"}))
    core.create_namespaced_config_map("default", configmap("c", {"app": "ui", "tier": "db"}))

    listed = core.list_namespaced_config_map("default", label_selector=selector)

    assert {item.metadata.name for item in listed.items} == expected


def test_list_with_field_selectors_and_across_namespaces(api):
    core = CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("default", configmap("a"))
    core.create_namespaced_config_map("other", configmap("a"))
    core.create_namespaced_config_map("other", configmap("b"))

    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a")
    not_default = core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace!=default"
    )

    assert {(i.metadata.namespace, i.metadata.name) for i in by_name.items} == {
        ("default", "a"),
        ("other", "a"),
    }
    assert {i.metadata.name for i in not_default.items} == {"a", "b"}
    assert int(by_name.metadata.resource_version) >= 3


def test_bad_selector_is_400(api):
    with pytest.raises(ApiException) as error:
        CoreV1Api(api).list_namespaced_config_map("default", label_selector="a in (b")
    assert error.value.status == 400


def test_namespaces_are_listed_with_default_present(api):
    names = {ns.metadata.name for ns in CoreV1Api(api).list_namespace().items}
    assert "default" in names
    assert CoreV1Api(api).read_namespace("default").status.phase == "Active"


def test_deleting_a_namespace_deletes_its_objects(api):
    core = CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", configmap("a"))
    core.delete_namespace("doomed")
    assert core.list_namespaced_config_map("doomed").items == []


def test_replace_with_stale_resource_version_is_409(api):
    core = CoreV1Api(api)
    created = core.create_namespaced_config_map("default", configmap("a", x="1"))
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "2"}})

    stale = configmap("a", x="3")
    stale["metadata"]["resourceVersion"] = created.metadata.resource_version
    with pytest.raises(ApiException) as error:
        core.replace_namespaced_config_map("a", "default", stale)

    assert error.value.status == 409
    assert json.loads(error.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("a", "default").data == {"x": "2"}


def test_replace_with_current_resource_version_replaces_whole_object(api):
    core = CoreV1Api(api)
    created = core.create_namespaced_config_map("default", configmap("a", {"k": "v"}, x="1"))
    fresh = configmap("a", y="2")
    fresh["metadata"]["resourceVersion"] = created.metadata.resource_version

    replaced = core.replace_namespaced_config_map("a", "default", fresh)

    assert replaced.data == {"y": "2"}
    assert not replaced.metadata.labels, "PUT replaces, it does not merge"
    assert replaced.metadata.uid == created.metadata.uid
    assert replaced.metadata.creation_timestamp == created.metadata.creation_timestamp


def test_patch_flavours(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", configmap("a", {"keep": "me"}, x="1", y="2"))

    core.patch_namespaced_config_map("a", "default", {"data": {"x": None, "z": "3"}})
    core.patch_namespaced_config_map(
        "a", "default", [{"op": "replace", "path": "/data/y", "value": "20"}]
    )
    merged = core.patch_namespaced_config_map(
        "a",
        "default",
        {"metadata": {"labels": {"new": "label"}}},
        _content_type="application/merge-patch+json",
    )

    assert merged.data == {"y": "20", "z": "3"}
    assert merged.metadata.labels == {"keep": "me", "new": "label"}


def test_failed_json_patch_test_is_422_and_changes_nothing(api):
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", configmap("a", x="1"))
    with pytest.raises(ApiException) as error:
        core.patch_namespaced_config_map(
            "a",
            "default",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
                {"op": "replace", "path": "/data/x", "value": "2"},
            ],
        )
    assert error.value.status == 422
    assert core.read_namespaced_config_map("a", "default").data == {"x": "1"}


def test_strategic_merge_patch_merges_containers_by_name(api):
    core = CoreV1Api(api)
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "a", "image": "one", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "two"},
            ]
        },
    }
    core.create_namespaced_pod("default", pod)
    patched = core.patch_namespaced_pod(
        "p", "default", {"spec": {"containers": [{"name": "b", "image": "three"}]}}
    )
    assert [(c.name, c.image) for c in patched.spec.containers] == [("a", "one"), ("b", "three")]
    assert patched.spec.containers[0].env[0].value == "1"


def test_strategic_merge_patch_on_custom_resources_is_415(api):
    custom = CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*WIDGETS[:2], "default", WIDGETS[2], widget("w"))
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(
            *WIDGETS[:2],
            "default",
            WIDGETS[2],
            "w",
            {"spec": {"replicas": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert error.value.status == 415


def test_dry_run_is_not_stored(api):
    core = CoreV1Api(api)
    answer = core.create_namespaced_config_map("default", configmap("a"), dry_run="All")
    assert answer.metadata.name == "a"
    assert core.list_namespaced_config_map("default").items == []

    core.create_namespaced_config_map("default", configmap("b", x="1"))
    core.patch_namespaced_config_map("b", "default", {"data": {"x": "2"}}, dry_run="All")
    core.delete_namespaced_config_map("b", "default", dry_run="All")
    assert core.read_namespaced_config_map("b", "default").data == {"x": "1"}


def test_delete_collection_honours_selectors(api):
    core = CoreV1Api(api)
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map("default", configmap(name, {"tier": tier}))

    core.delete_collection_namespaced_config_map("default", label_selector="tier=web")

    assert [i.metadata.name for i in core.list_namespaced_config_map("default").items] == ["c"]


def test_an_unknown_resource_is_404(api):
    with pytest.raises(ApiException) as error:
        CustomObjectsApi(api).list_namespaced_custom_object("nope.dev", "v1", "default", "things")
    assert error.value.status == 404


def test_config_from_kubeconfig_is_not_the_environment(cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    assert client.configuration.host == cluster.base_url
