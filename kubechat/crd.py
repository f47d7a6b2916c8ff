"""The ModelDeployment CustomResourceDefinition, generated from the spec model.

``python -m kubechat.crd`` writes ``crds/modeldeployment.yaml`` and the chart's copy from
``kubechat/spec.py`` (and ``kubechat/status_schema.py``); ``--check`` only says whether they are
current. A new field is a field of the pydantic model (its description is what ``kubectl
explain`` shows), then this command: pydantic's JSON schema becomes the structural OpenAPI schema
the API server wants. What is the CRD's own (names, printer columns, subresources) is here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

from .spec import GROUP, KIND, PLURAL, VERSION, ModelDeployment
from .status_schema import ModelDeploymentStatus

CRD_FILES = ("crds/modeldeployment.yaml", "charts/kubechat/crds/modeldeployment.yaml")

HEADER = """\
# The ModelDeployment custom resource: one model served by N kubechat workers.
# Generated from kubechat/spec.py by `python -m kubechat.crd`: edit the model, then run it.
# Unknown fields: structural schemas cannot combine `properties` with `additionalProperties: false`;
# the API server prunes unknown fields, and kubectl's default server-side field validation
# (--validate=strict) rejects them, so a typo such as `replica:` is an error.
"""

PRINTER_COLUMNS = [
    {
        "name": "Model",
        "type": "string",
        "description": "The model path (hub id, directory or kubechat:demo).",
        "jsonPath": ".spec.model.path",
    },
    {
        "name": "GPUs",
        "type": "integer",
        "description": "GPUs per replica.",
        "jsonPath": ".spec.resources.gpus",
    },
    {
        "name": "Replicas",
        "type": "integer",
        "description": "Desired number of workers.",
        "jsonPath": ".spec.replicas",
    },
    {
        "name": "Desired",
        "type": "integer",
        "description": "Workers the operator aims at (the autoscaler's decision when set).",
        "jsonPath": ".status.desiredReplicas",
    },
    {
        "name": "Ready",
        "type": "integer",
        "description": "Workers that are ready with a fresh heartbeat.",
        "jsonPath": ".status.readyReplicas",
    },
    {
        "name": "Phase",
        "type": "string",
        "description": "Overall state of the deployment.",
        "jsonPath": ".status.phase",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

SUBRESOURCES = {
    "status": {},
    # `kubectl scale md/NAME --replicas N` (and autoscalers) work on spec.replicas
    "scale": {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
}

# Kubernetes owns these top-level fields: a CRD may describe them and restrict metadata.name only.
_KUBERNETES_FIELDS = ("apiVersion", "kind", "metadata")
_METADATA_FIELDS = ("name", "generateName")

# The order keys are written in, so that a schema node reads from what it is to what it holds.
_KEY_ORDER = [
    "type",
    "x-kubernetes-int-or-string",
    "anyOf",
    "format",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "enum",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "description",
    "required",
    "properties",
    "items",
    "additionalProperties",
]
# pydantic's JSON Schema words that have no place in a CRD (or say what a CRD says otherwise)
_DROPPED = {"title", "const", "$defs"}


class _DefaultFactories(GenerateJsonSchema):
    """pydantic's JSON schema, with ``default: {}`` for fields whose default is built by a
    factory (``storage``, ``worker.env``): the API server then fills in the defaults inside."""

    def get_default_value(self, schema: Any) -> Any:
        """The field's default; ``{}`` for a model built from no input, a factory's value else."""
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()
        if isinstance(value, BaseModel):
            return {}
        return value if value is not None else NoDefault


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema as a structural OpenAPI v3 schema: references inlined, ``X | None``
    as X (``nullable`` only where the field says so), unknown fields left to the API server."""
    schema = model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_DefaultFactories
    )
    return _structural(schema, schema.get("$defs", {}))


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue  # closed objects: the API server prunes, kubectl's strict validation rejects
        if key == "patternProperties":  # keys checked by spec.py only: no CRD equivalent
            (value,) = value.values()
            key = "additionalProperties"
        if key == "properties":
            value = {name: _structural(child, defs) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            value = _structural(value, defs)
        out[key] = value
    return _ordered(out)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``$ref`` inlined (the referring node's keys win) and ``anyOf [X, null]`` as X."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = node.get("anyOf")
        if options and {"type": "null"} in options:
            (inner,) = [o for o in options if o != {"type": "null"}]
            node = {**inner, **{k: v for k, v in node.items() if k != "anyOf"}}
            continue
        return node


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda item: rank.get(item[0], len(rank))))


def resource_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ModelDeployment: spec and status from their models; apiVersion,
    kind and metadata as Kubernetes defines them (only metadata.name restricted)."""
    schema = openapi_schema(ModelDeployment)
    properties = schema["properties"]
    for name in ("apiVersion", "kind"):
        properties[name] = {"type": "string", "description": properties[name]["description"]}
    metadata = properties["metadata"]
    metadata["properties"] = {
        k: v for k, v in metadata["properties"].items() if k in _METADATA_FIELDS
    }
    metadata.pop("required", None)
    properties["status"] = openapi_schema(ModelDeploymentStatus)
    schema["required"] = [r for r in schema["required"] if r not in _KUBERNETES_FIELDS]
    return _ordered(schema)


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kubechat", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["md"],
                "categories": ["kubechat"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": SUBRESOURCES,
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists; long text folded (``>-``) to stay near 100 columns."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        """Indent list items under their key, as kubectl and most CRDs write them."""
        return super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = ">" if len(value) > 60 and "\n" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    """The CRD as the YAML file the repository holds."""
    body = yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=80, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the CRD files under ``--root``."""
    parser = argparse.ArgumentParser(
        prog="python -m kubechat.crd", description="Generate the ModelDeployment CRD."
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository's root")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is not current"
    )
    args = parser.parse_args(argv)
    text = render()
    stale = []
    for name in CRD_FILES:
        path = args.root / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"not current: {', '.join(stale)}; run python -m kubechat.crd", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
