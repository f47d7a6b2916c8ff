"""Reading ModelDeployments from YAML files the way ``kubectl apply -f`` takes them.

Files may hold several documents (``---``) and ``kind: List`` wrappers; a directory means its
``.yaml``, ``.yml`` and ``.json`` files. Documents of other kinds are skipped with a warning. Every
problem (file, document number counted from 1, field path) is collected and raised together.

A relative ``spec.model.path`` is read from the folder of the file it is written in, not from the
working directory: ``./my-model`` and ``../models/x`` always (they must exist), a bare name such
as ``my-model`` when that folder holds it (otherwise it stays a hub id). A cluster has no such
folder: there the spec refuses ``./`` and ``../`` paths (kubechat/spec.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from .spec import (
    GROUP,
    KIND,
    ModelDeployment,
    SpecError,
    is_demo_model,
    is_relative_path,
    parse_model_deployment,
)

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """Everything wrong with a set of manifests; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
        else:
            files.append(path)
    return files


def _objects(doc: Any, where: str) -> list[tuple[str, Any]]:
    """A document's objects with their locations; ``kind: List`` is unwrapped (nested too)."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
        items = doc["items"] or []
        if not isinstance(items, list):
            return [(where, doc)]
        out = []
        for i, item in enumerate(items):
            out += _objects(item, f"{where}: items[{i}]")
        return out
    return [(where, doc)]


def _is_ours(obj: dict) -> bool:
    """A ModelDeployment of our group (any version: a wrong version is reported, not skipped)."""
    api_version = str(obj.get("apiVersion", ""))
    return obj.get("kind") == KIND and api_version.split("/")[0] == GROUP


def resolve_model_path(obj: dict, folder: Path) -> str | None:
    """Make a relative ``spec.model.path`` of ``obj`` absolute against ``folder`` (in place),
    when it is written relative (``./``, ``../``) or names something there. Returns the
    problem when a ``./`` or ``../`` path names nothing; malformed objects are left to the spec."""
    spec = obj.get("spec")
    model = spec.get("model") if isinstance(spec, dict) else None
    path = model.get("path") if isinstance(model, dict) else None
    if not isinstance(path, str) or not path.strip() or is_demo_model(path):
        return None
    if os.path.isabs(path) or path.startswith("~"):
        return None
    target = Path(os.path.abspath(folder / path))
    if target.exists():
        model["path"] = str(target)
    elif is_relative_path(path):
        return f"spec.model.path: {path}: no such file or folder next to the manifest ({target})"
    return None


def load_manifests(paths: list[Path]) -> list[ModelDeployment]:
    """Every ModelDeployment in ``paths`` in order; raises ManifestError listing all problems."""
    problems: list[str] = []
    found: list[tuple[str, ModelDeployment]] = []
    for file in _expand(paths):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{file}: cannot read: {exc.strerror or exc}")
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            problems.append(f"{file}: invalid YAML: {' '.join(str(exc).split())}")
            continue
        for index, doc in enumerate(docs, start=1):
            if doc is None:  # an empty document, e.g. after a trailing ---
                continue
            for where, obj in _objects(doc, f"{file}#{index}"):
                if not isinstance(obj, dict) or "kind" not in obj:
                    problems.append(f"{where}: not a Kubernetes object (no kind)")
                    continue
                if not _is_ours(obj):
                    log.warning("%s: skipping %s %s", where, obj.get("apiVersion"), obj["kind"])
                    continue
                problem = resolve_model_path(obj, file.parent)
                if problem is not None:
                    problems.append(f"{where}: {problem}")
                    continue
                try:
                    found.append((where, parse_model_deployment(obj)))
                except SpecError as exc:
                    problems += [f"{where}: {p or '(root)'}: {m}" for p, m in exc.errors]
    first_seen: dict[tuple[str, str], str] = {}
    for where, md in found:
        key = (md.namespace or "default", md.name)
        if key in first_seen:
            problems.append(
                f"{where}: metadata.name: ModelDeployment {key[0]}/{key[1]} "
                f"is already defined at {first_seen[key]}"
            )
        else:
            first_seen[key] = where
    if problems:
        raise ManifestError(problems)
    return [md for _, md in found]
