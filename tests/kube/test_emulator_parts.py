"""The pieces of the emulator that are plain functions: selectors, patches, JSONPath, ages."""

from __future__ import annotations

import datetime

import pytest

from tests.support.kube_patches import (
    PatchTestFailed,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tests.support.kube_selectors import SelectorError, field_selector, label_selector
from tests.support.kube_tables import column_cell, human_age, jsonpath


def test_label_selector_grammar():
    labels = {"app": "chat", "tier": "web", "replicas": "3"}
    assert label_selector("app=chat, tier in (web, db)")(labels)
    assert label_selector("replicas>2,replicas<4")(labels)
    assert not label_selector("app=chat,!tier")(labels)
    assert label_selector("")(labels), "an empty selector selects everything"
    with pytest.raises(SelectorError):
        label_selector("app=chat,=x")


def test_field_selector_on_nested_fields():
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}, "spec": {}}
    assert field_selector("status.phase=Running,metadata.name==p")(pod)
    assert field_selector("spec.nodeName=")(pod), "a missing field is the empty string"
    assert not field_selector("status.phase!=Running")(pod)
    with pytest.raises(SelectorError):
        field_selector("status.phase in (Running)")


def test_merge_patch_deletes_with_null_and_replaces_lists():
    target = {"a": {"b": 1, "c": 2}, "items": [1, 2]}
    assert merge_patch(target, {"a": {"b": None}, "items": [3]}) == {"a": {"c": 2}, "items": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "items": [1, 2]}, "the target is not mutated"


def test_strategic_merge_patch_directives():
    target = {
        "metadata": {"finalizers": ["a", "b"]},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "Synced", "status": "True"},
            ]
        },
    }
    patched = strategic_merge_patch(
        target,
        {
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "Synced", "$patch": "delete"},
                ],
                "$setElementOrder/conditions": [{"type": "Ready"}],
            },
        },
    )
    assert patched["metadata"]["finalizers"] == ["b", "c"]
    assert patched["status"] == {"conditions": [{"type": "Ready", "status": "True"}]}


def test_json_patch_test_failure_is_its_own_error():
    assert json_patch({"a": 1}, [{"op": "replace", "path": "/a", "value": 2}]) == {"a": 2}
    with pytest.raises(PatchTestFailed):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 5}])


def test_jsonpath_subset_of_printer_columns():
    obj = {
        "spec": {"names": ["x", "y"]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "No"}]
        },
    }
    assert jsonpath(obj, ".spec.names[0]") == ["x"]
    assert jsonpath(obj, ".spec.names[*]") == ["x", "y"]
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, "{.spec.missing}") == []


def test_column_cells_are_typed_like_the_api_server_types_them():
    obj = {"spec": {"replicas": 2, "name": "x"}}
    assert column_cell({"type": "integer", "jsonPath": ".spec.replicas"}, obj) == 2
    assert column_cell({"type": "integer", "jsonPath": ".spec.name"}, obj) is None
    assert column_cell({"type": "string", "jsonPath": ".spec.replicas"}, obj) == "2"
    assert column_cell({"type": "string", "jsonPath": ".spec.nothing"}, obj) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (3 * 86400, "3d"),
    ],
)
def test_ages_read_like_kubectl(seconds, shown):
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    then = (now - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert human_age(then, now) == shown
