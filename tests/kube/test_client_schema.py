"""Custom resources are pruned, defaulted and validated against their CRD's schema on writes."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException, CustomObjectsApi

from tests.kube.common import MINIMAL_CRD
from tests.support.kube_server import kubernetes_client, running_emulator

GADGETS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.test.kubechat.dev"},
    "spec": {
        "group": "test.kubechat.dev",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "default": {},
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "default": 1},
                                    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                                    "note": {"type": "string", "nullable": True},
                                    "tags": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                    "free": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}
API = ("test.kubechat.dev", "v1", "default", "gadgets")


def gadget(**spec: object) -> dict:
    return {
        "apiVersion": "test.kubechat.dev/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": spec,
    }


@pytest.fixture
def custom(cluster) -> CustomObjectsApi:
    cluster.register_crd(GADGETS_CRD)
    return CustomObjectsApi(kubernetes_client(cluster.kubeconfig))


def test_defaults_are_applied_and_unknown_fields_pruned(custom):
    created = custom.create_namespaced_custom_object(
        *API, gadget(size=2, unknown=1, tags={"a": "b"}, free={"any": {"thing": 1}}, note=None)
    )
    assert created["spec"] == {
        "size": 2,
        "mode": "a",
        "tags": {"a": "b"},
        "free": {"any": {"thing": 1}},
        "note": None,
    }

    body = gadget()
    del body["spec"]
    assert custom.create_namespaced_custom_object(*API, body | {"metadata": {"name": "h"}})[
        "spec"
    ] == {"size": 1, "mode": "a"}


def test_status_writes_are_pruned_too(custom):
    custom.create_namespaced_custom_object(*API, gadget(size=1))
    patched = custom.patch_namespaced_custom_object_status(
        *API, "g", {"status": {"phase": "Ready", "invented": True}}
    )
    assert patched["status"] == {"phase": "Ready"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"size": 0}, "spec.size"),
        ({"size": 1, "mode": "c"}, "spec.mode"),
        ({"size": "x"}, "spec.size"),
    ],
)
def test_invalid_custom_resources_are_refused_with_422(custom, spec, field):
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(*API, gadget(**spec))
    assert error.value.status == 422
    status = json.loads(error.value.body)
    assert status["reason"] == "Invalid"
    assert field in status["message"]
    assert custom.list_namespaced_custom_object(*API)["items"] == []


def test_an_invalid_update_changes_nothing(custom):
    custom.create_namespaced_custom_object(*API, gadget(size=3))
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(*API, "g", {"spec": {"size": -1}})
    assert error.value.status == 422
    assert custom.get_namespaced_custom_object(*API, "g")["spec"]["size"] == 3


def test_validation_can_be_switched_off(tmp_path):
    with running_emulator(
        crds=[MINIMAL_CRD, GADGETS_CRD], directory=tmp_path, validate=False
    ) as cluster:
        custom = CustomObjectsApi(kubernetes_client(cluster.kubeconfig))
        stored = custom.create_namespaced_custom_object(*API, gadget(size=0, junk=1))
    assert stored["spec"] == {"size": 0, "mode": "a"}, "still pruned and defaulted"
