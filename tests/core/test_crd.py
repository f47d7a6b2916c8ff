"""The CRD: generated from kubechat/spec.py, well-formed, explained, validating like spec.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kubechat.crd import CRD_FILES, openapi_schema, render
from kubechat.crd import main as crd_command
from kubechat.spec import SpecError, WorkerSpec, parse_model_deployment

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "modeldeployment.yaml"
# bad.yaml is wrong on purpose (the README's invalid manifest; tests/core/test_manifests.py)
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if p.name != "bad.yaml")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return v


@pytest.fixture(scope="module")
def schema(version) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = ""):
    """Every schema node with its path (properties, items, additionalProperties, anyOf)."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def as_jsonschema(node: Any, strict: bool = True, path: str = "") -> Any:
    """The CRD schema as plain JSON Schema. ``strict`` rejects unknown fields, as the API server
    does under kubectl's default server-side field validation (metadata stays open)."""
    if isinstance(node, list):
        return [as_jsonschema(n, strict, path) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_jsonschema(v, strict, f"{path}.{k}") for k, v in node.items()}
    out = {k: v for k, v in out.items() if not k.startswith("x-kubernetes-")}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if strict and "properties" in node and not path.endswith(".properties.metadata"):
        out.setdefault("additionalProperties", False)
    return out


def crd_validator(schema) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(as_jsonschema(schema))


# -- the CRD object itself ------------------------------------------------------------------


def test_crd_names_scope_and_version(crd, version):
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "modeldeployments.kubechat.dev"
    spec = crd["spec"]
    assert spec["group"] == "kubechat.dev" and spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "ModelDeployment",
        "modeldeployments",
        "modeldeployment",
    )
    assert names["shortNames"] == ["md"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_status_and_scale_subresources(version):
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns(version, schema):
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Model", "GPUs", "Replicas", "Desired", "Ready", "Phase", "Age"]
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    paths = {p for p, _ in walk(schema)}
    for column in columns.values():
        if column["name"] != "Age":
            assert column["jsonPath"] in paths, f"{column['name']} points at nothing"


def test_crd_is_a_valid_kubernetes_object(crd):
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


def test_every_field_has_a_description(schema):
    missing = [p or "(root)" for p, node in walk(schema) if not node.get("description")]
    assert missing == []


def test_schema_is_structural(schema):
    """The API server's structural-schema rules, as far as they concern this schema."""
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
            continue
        assert "type" in node, f"{path}: no type"
        assert "anyOf" not in node, f"{path}: anyOf only for int-or-string"
        if "properties" in node:
            assert node["type"] == "object"
            assert "additionalProperties" not in node, f"{path}: properties + additionalProperties"
    metadata = schema["properties"]["metadata"]
    assert set(metadata.get("properties", {})) <= {"name", "generateName"}


def test_defaults_are_valid_against_their_own_schema(schema):
    for path, node in walk(schema):
        if "default" in node:
            errors = list(
                jsonschema.Draft4Validator(as_jsonschema(node)).iter_errors(node["default"])
            )
            assert errors == [], f"{path}: default {node['default']!r} is invalid"


# -- validating manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd(schema, path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        crd_validator(schema).validate(doc)
        parse_model_deployment(doc)


VALID = {
    "apiVersion": "kubechat.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "chat"},
    "spec": {"model": {"path": "org/model"}},
}

# Each case must be rejected by BOTH encodings: the CRD (API server) and spec.py.
INVALID = {
    "negative gpus": ("spec.resources", {"gpus": -1}),
    "bad dtype": ("spec.model", {"path": "m", "dtype": "fp16"}),
    "bad memory string": ("spec.resources", {"gpus": 1, "maxGpuMemory": "20 gigs"}),
    "memory without unit": ("spec.resources", {"gpus": 1, "maxGpuMemory": "20"}),
    "negative replicas": ("spec.replicas", -1),
    "zero concurrency": ("spec.worker", {"limitConcurrency": 0}),
    "zero stream interval": ("spec.worker", {"streamInterval": 0}),
    "string gpus": ("spec.resources", {"gpus": "2"}),
    "typo replica": ("spec.replica", 2),
    "typo in model": ("spec.model", {"path": "m", "trust_remote_code": True}),
    "missing path": ("spec.model", {"dtype": "auto"}),
    "empty path": ("spec.model", {"path": ""}),
    "name with a comma": ("spec.model", {"path": "m", "names": ["a,b"]}),
    "no names": ("spec.model", {"path": "m", "names": []}),
    "uppercase name": ("metadata", {"name": "Chat"}),
    "bad pvc name": ("spec.storage", {"persistentVolumeClaim": "My_PVC"}),
    "relative mount": ("spec.storage", {"mountPath": "models"}),
    "bad cpu": ("spec.resources", {"cpu": "two cores"}),
    "numeric env value": ("spec.worker", {"env": {"A": 1}}),
    "bad template name": ("spec.model", {"path": "m", "convTemplate": "my template"}),
    "bad toleration effect": ("spec.scheduling", {"tolerations": [{"key": "k", "effect": "No"}]}),
    "toleration typo": ("spec.scheduling", {"tolerations": [{"keys": "k"}]}),
    "affinity typo": ("spec.scheduling", {"affinity": {"nodeAfinity": {}}}),
    "numeric node label": ("spec.scheduling", {"nodeSelector": {"gpu": 1}}),
    "bad priority class": ("spec.scheduling", {"priorityClassName": "High"}),
    "bad memory limit": ("spec.resources", {"memoryLimit": "lots"}),
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_invalid_specs_are_rejected_by_both_encodings(schema, case):
    obj = with_change(*INVALID[case])
    assert list(crd_validator(schema).iter_errors(obj)), "the CRD accepted it"
    with pytest.raises(SpecError):
        parse_model_deployment(obj)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.resources", {"gpus": 1, "maxGpuMemory": "20Gi"}),
        ("spec.resources", {"gpus": 1, "maxGpuMemory": "500MiB"}),
        ("spec.resources", {"gpus": 1, "maxGpuMemory": "1.5TB"}),
        ("spec.resources", {"cpu": 2, "memory": "32Gi"}),
        ("spec.resources", {"cpu": "500m"}),
        ("spec.model", {"path": "m", "convTemplate": None}),
        ("spec.model", {"path": "m", "names": ["a", "b-c", "org/name"]}),
        ("spec.replicas", 0),
        ("spec.worker", {"env": {"HF_TOKEN": "x", "my.var": "y"}}),
        ("status", {"phase": "Running", "readyReplicas": 1}),
        ("spec.resources", {"cpu": "1", "cpuLimit": 2, "memory": "1Gi", "memoryLimit": "2Gi"}),
        (
            "spec.scheduling",
            {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "spot", "value": "y", "effect": "NoExecute", "tolerationSeconds": 5},
                ],
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 1,
                                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"},
                            }
                        ]
                    }
                },
                "priorityClassName": "inference-high",
            },
        ),
    ],
)
def test_valid_variants_are_accepted_by_both_encodings(schema, path, value):
    obj = with_change(path, value)
    crd_validator(schema).validate(obj)
    parse_model_deployment(obj)


def test_status_schema_accepts_what_the_operator_reports(schema):
    status = {
        "phase": "Running",
        "replicas": 2,
        "readyReplicas": 1,
        "selector": "kubechat.dev/deployment=chat",
        "observedGeneration": 3,
        "workers": [
            {
                "pod": "chat-abc-0",
                "address": "http://10.0.0.5:8000",
                "ready": True,
                "lastHeartbeat": "2024-01-01T00:00:00Z",
                "heartbeatAgeSeconds": 1.5,
                "load": {"inFlight": 2, "queued": 0, "capacity": 32},
            }
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "HeartbeatLost",
                "message": "1 of 2 workers lost its heartbeat",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
                "observedGeneration": 3,
            }
        ],
    }
    crd_validator(schema).validate(with_change("status", status))
    bad = copy.deepcopy(status)
    bad["conditions"][0]["status"] = "Maybe"
    assert list(crd_validator(schema).iter_errors(with_change("status", bad)))


# -- generated from spec.py ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CRD_FILES)
def test_crd_files_are_what_the_generator_writes(name):
    """crds/ and the chart's copy are `python -m kubechat.crd`'s output, byte for byte."""
    assert (REPO / name).read_text() == render(), f"{name} is stale: run python -m kubechat.crd"


def test_the_generator_writes_stale_files_and_checks_current_ones(tmp_path, capsys):
    assert crd_command(["--root", str(tmp_path), "--check"]) == 1
    assert crd_command(["--root", str(tmp_path)]) == 0
    for name in CRD_FILES:
        assert yaml.safe_load((tmp_path / name).read_text()) == yaml.safe_load(CRD_PATH.read_text())
    assert crd_command(["--root", str(tmp_path), "--check"]) == 0


def test_a_new_spec_field_reaches_the_crd_with_its_description_default_and_bounds():
    """What adding a field takes: the field. (A stand-in model, so spec.py stays as it is.)"""

    class Knobs(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_replicas: int = Field(
            default=3, ge=1, le=9, alias="maxReplicas", description="At most this many."
        )
        engine: Literal["kubechat", "vllm"] | None = Field(default=None, description="Engine.")
        window: WorkerSpec = Field(default_factory=WorkerSpec, description="Nested, defaulted.")

    schema = openapi_schema(Knobs)
    assert schema["properties"]["maxReplicas"] == {
        "type": "integer",
        "default": 3,
        "minimum": 1,
        "maximum": 9,
        "description": "At most this many.",
    }
    assert schema["properties"]["engine"] == {
        "type": "string",
        "enum": ["kubechat", "vllm"],
        "description": "Engine.",
    }
    window = schema["properties"]["window"]
    assert window["default"] == {} and window["description"] == "Nested, defaulted."
    assert window["properties"]["limitConcurrency"]["minimum"] == 1
    assert "additionalProperties" not in schema and "required" not in schema


def apply_crd_defaults(node: dict[str, Any], obj: Any) -> Any:
    """What the API server stores for ``obj``: schema defaults filled in, top down."""
    if not isinstance(obj, dict) or "properties" not in node:
        return obj
    out = dict(obj)
    for name, child in node["properties"].items():
        if name not in out and "default" in child:
            out[name] = copy.deepcopy(child["default"])
        if name in out:
            out[name] = apply_crd_defaults(child, out[name])
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_defaults_applied_by_the_api_server_match_spec_py(schema, path):
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        stored = apply_crd_defaults(schema, doc)
        parsed = parse_model_deployment(doc).to_dict()
        assert stored["spec"] == parsed["spec"]


def test_defaults_of_a_minimal_manifest_match_spec_py(schema):
    stored = apply_crd_defaults(schema, VALID)
    parsed = parse_model_deployment(VALID).to_dict()
    # names default to [metadata.name]: spec.py knows the name, a schema default cannot
    assert parsed["spec"]["model"].pop("names") == ["chat"]
    assert stored["spec"] == parsed["spec"]
