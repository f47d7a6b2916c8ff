"""The ModelDeployment model: defaults, and errors that name the field path."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubechat.spec import SpecError, is_demo_model, parse_model_deployment, quantity_value


def errors_of(obj) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_model_deployment(obj)
    return dict(info.value.errors)


def test_defaults_fill_everything_left_out(manifest):
    md = parse_model_deployment(manifest())
    assert md.name == "chat"
    assert md.namespace is None
    assert md.model_names == ["chat"]
    assert md.spec.model.names == ["chat"]
    assert md.spec.model.trust_remote_code is False
    assert md.spec.model.dtype == "auto"
    assert md.spec.model.conv_template is None
    assert md.spec.model.revision is None
    assert md.spec.storage.persistent_volume_claim is None
    assert md.spec.storage.mount_path == "/models"
    assert md.spec.resources.gpus == 0
    assert md.spec.resources.max_gpu_memory is None
    assert md.spec.resources.cpu is None and md.spec.resources.memory is None
    assert md.spec.replicas == 1
    assert md.spec.worker.limit_concurrency == 32
    assert md.spec.worker.stream_interval is None
    assert md.spec.worker.env == {}


def test_camel_case_fields_are_read(manifest):
    md = parse_model_deployment(
        manifest(
            {
                "metadata.namespace": "llm",
                "metadata.labels": {"team": "a"},
                "spec.model.names": ["a", "b"],
                "spec.model.trustRemoteCode": True,
                "spec.model.dtype": "bfloat16",
                "spec.model.convTemplate": "llama-2",
                "spec.model.revision": "v1.0",
                "spec.storage": {"persistentVolumeClaim": "models", "mountPath": "/data"},
                "spec.resources": {"gpus": 2, "maxGpuMemory": "20GiB", "cpu": 4, "memory": "32Gi"},
                "spec.replicas": 3,
                "spec.worker": {"limitConcurrency": 8, "streamInterval": 2, "env": {"A": "1"}},
            }
        )
    )
    assert md.namespace == "llm" and md.metadata.labels == {"team": "a"}
    assert md.model_names == ["a", "b"]
    assert md.spec.model.trust_remote_code is True
    assert (md.spec.model.dtype, md.spec.model.conv_template) == ("bfloat16", "llama-2")
    assert md.spec.model.revision == "v1.0"
    assert md.spec.storage.persistent_volume_claim == "models"
    assert md.spec.storage.mount_path == "/data"
    assert md.spec.resources.gpus == 2 and md.spec.resources.max_gpu_memory == "20GiB"
    assert md.spec.resources.cpu == "4"  # int-or-string, kept as text
    assert md.spec.replicas == 3
    assert md.spec.worker.limit_concurrency == 8 and md.spec.worker.stream_interval == 2
    assert md.spec.worker.env == {"A": "1"}


def test_status_and_server_metadata_are_ignored(manifest):
    obj = manifest(
        {"status": {"phase": "Running"}, "metadata.uid": "123", "metadata.generation": 4}
    )
    md = parse_model_deployment(obj)
    assert "status" not in md.to_dict()
    assert md.to_dict()["metadata"] == {"name": "chat", "labels": {}}


def test_to_dict_parses_back_to_the_same_deployment(manifest):
    md = parse_model_deployment(manifest({"spec.resources.gpus": 1, "spec.replicas": 0}))
    assert parse_model_deployment(md.to_dict()) == md


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"spec.resources.gpus": -1}, "spec.resources.gpus", "must be >= 0 (got -1)"),
        ({"spec.replicas": -2}, "spec.replicas", "must be >= 0 (got -2)"),
        ({"spec.worker.limitConcurrency": 0}, "spec.worker.limitConcurrency", "must be >= 1"),
        ({"spec.worker.streamInterval": 0}, "spec.worker.streamInterval", "must be >= 1"),
        ({"spec.model.dtype": "fp16"}, "spec.model.dtype", "must be one of"),
        ({"spec.resources.gpus": "two"}, "spec.resources.gpus", "must be an integer"),
        ({"spec.resources.gpus": True}, "spec.resources.gpus", "must be an integer"),
        ({"spec.model.trustRemoteCode": "yes"}, "spec.model.trustRemoteCode", "true or false"),
        (
            {"spec.resources": {"gpus": 1, "maxGpuMemory": "20 gigs"}},
            "spec.resources.maxGpuMemory",
            "memory size",
        ),
        (
            {"spec.resources": {"maxGpuMemory": "20GiB"}},
            "spec.resources.maxGpuMemory",
            "set gpus >= 1",
        ),
        ({"spec.resources.cpu": "lots"}, "spec.resources.cpu", "Kubernetes quantity"),
        ({"spec.resources.memory": 1.5}, "spec.resources.memory", "must be a string"),
        ({"metadata.name": "Chat_Model"}, "metadata.name", "DNS-1123 label"),
        ({"metadata.name": "a" * 64}, "metadata.name", "at most 63"),
        ({"metadata.namespace": "-x"}, "metadata.namespace", "DNS-1123 label"),
        (
            {"spec.storage.persistentVolumeClaim": "My PVC"},
            "spec.storage.persistentVolumeClaim",
            "DNS",
        ),
        ({"spec.storage.mountPath": "models"}, "spec.storage.mountPath", "absolute path"),
        ({"spec.model.names": []}, "spec.model.names", "at least one"),
        ({"spec.model.names": ["a,b"]}, "spec.model.names[0]", "without commas"),
        ({"spec.model.names": ["a", "b", "a"]}, "spec.model.names", "unique"),
        ({"spec.model.path": ""}, "spec.model.path", "must not be empty"),
        ({"spec.model.convTemplate": "my template"}, "spec.model.convTemplate", "template name"),
        ({"spec.worker.env": {"A": 1}}, "spec.worker.env.A", "must be a string"),
        ({"spec.worker.env": {"BAD NAME": "x"}}, "spec.worker.env", "environment variable name"),
        ({"spec.replica": 2}, "spec.replica", "did you mean 'replicas'"),
        ({"spec.model.trust_remote_code": True}, "spec.model.trust_remote_code", "trustRemoteCode"),
        ({"spec.resources.gpu": 1}, "spec.resources.gpu", "unknown field"),
        ({"spec.model": "org/model"}, "spec.model", "must be a mapping"),
        (
            {"spec.resources": {"memory": "16Gi", "memoryLimit": "8Gi"}},
            "spec.resources.memoryLimit",
            "must be at least memory (16Gi), got 8Gi",
        ),
        (
            {"spec.resources": {"cpu": "2", "cpuLimit": "1500m"}},
            "spec.resources.cpuLimit",
            "must be at least cpu",
        ),
        (
            {"spec.scheduling.tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]},
            "spec.scheduling.tolerations[0].value",
            "empty with operator Exists",
        ),
        (
            {"spec.scheduling.tolerations": [{"effect": "NoSchedule"}]},
            "spec.scheduling.tolerations[0].operator",
            "must be Exists when no key",
        ),
        (
            {"spec.scheduling.tolerations": [{"key": "k", "tolerationSeconds": 30}]},
            "spec.scheduling.tolerations[0].tolerationSeconds",
            "needs effect NoExecute",
        ),
        (
            {"spec.scheduling.tolerations": [{"key": "k", "effect": "Never"}]},
            "spec.scheduling.tolerations[0].effect",
            "must be one of",
        ),
        (
            {"spec.scheduling.affinity": {"nodeAfinity": {}}},
            "spec.scheduling.affinity.nodeAfinity",
            "did you mean 'nodeAffinity'",
        ),
        (
            {"spec.scheduling.nodeSelector": {"gpu": 1}},
            "spec.scheduling.nodeSelector.gpu",
            "must be a string",
        ),
        (
            {"spec.scheduling.priorityClassName": "High Priority"},
            "spec.scheduling.priorityClassName",
            "DNS-1123 subdomain",
        ),
        ({"apiVersion": "kubechat.dev/v1"}, "apiVersion", "kubechat.dev/v1alpha1"),
        ({"kind": "Deployment"}, "kind", "ModelDeployment"),
    ],
)
def test_each_error_names_its_field(manifest, change, path, message):
    errors = errors_of(manifest(change))
    assert path in errors, errors
    assert message in errors[path]


def test_scheduling_and_limits_parse(manifest):
    md = parse_model_deployment(
        manifest(
            {
                "spec.resources": {"cpu": 2, "memory": "8Gi", "cpuLimit": 4, "memoryLimit": "8Gi"},
                "spec.scheduling": {
                    "nodeSelector": {"nvidia.com/gpu.product": "A100"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {
                            "key": "spot",
                            "value": "yes",
                            "effect": "NoExecute",
                            "tolerationSeconds": 60,
                        },
                    ],
                    "affinity": {
                        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
                    },
                    "priorityClassName": "inference-high",
                },
            }
        )
    )
    assert (md.spec.resources.cpu_limit, md.spec.resources.memory_limit) == ("4", "8Gi")
    scheduling = md.spec.scheduling
    assert scheduling.tolerations[1].toleration_seconds == 60
    assert scheduling.affinity.node_affinity == {
        "requiredDuringSchedulingIgnoredDuringExecution": {}
    }
    assert parse_model_deployment(md.to_dict()) == md
    assert parse_model_deployment(manifest()).to_dict()["spec"]["scheduling"] == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1.5", "1.5"),
        ("8Gi", str(8 * 2**30)),
        ("16G", "16e9"),
        (".5Ki", "512"),
    ],
)
def test_quantities_compare_by_value(text, value):
    assert quantity_value(text) == Decimal(value)


def test_missing_required_fields_are_listed_together():
    errors = errors_of({"apiVersion": "kubechat.dev/v1alpha1", "kind": "ModelDeployment"})
    assert errors == {"metadata": "required", "spec": "required"}
    errors = errors_of(
        {
            "apiVersion": "kubechat.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {},
            "spec": {},
        }
    )
    assert errors == {"metadata.name": "required", "spec.model": "required"}


def test_error_text_lists_every_problem(manifest):
    with pytest.raises(SpecError) as info:
        parse_model_deployment(manifest({"spec.resources.gpus": -1, "spec.replicas": -1}))
    lines = str(info.value).splitlines()
    assert "spec.resources.gpus: must be >= 0 (got -1)" in lines
    assert "spec.replicas: must be >= 0 (got -1)" in lines


def test_a_non_mapping_is_rejected():
    assert "must be a mapping" in errors_of(["not", "a", "mapping"])[""]


def test_gpu_memory_spellings(manifest):
    for text in ("20GiB", "20Gi", "20GB", "500MiB", "1.5TiB"):
        md = parse_model_deployment(manifest({"spec.resources": {"gpus": 1, "maxGpuMemory": text}}))
        assert md.spec.resources.max_gpu_memory == text


def test_demo_model_path_is_recognised():
    assert is_demo_model("kubechat:demo")
    assert not is_demo_model("kubechat/demo")
    assert not is_demo_model("/models/kubechat:demo-copy")
