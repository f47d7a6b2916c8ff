"""Loading ModelDeployments from YAML files as ``kubectl apply -f`` takes them."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubechat.manifests import ManifestError, load_manifests
from kubechat.spec import SpecError, parse_model_deployment

REPO = Path(__file__).resolve().parents[2]

DEPLOYMENT = """\
apiVersion: kubechat.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model:
    path: org/{name}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_multi_document_file_keeps_order_and_skips_empty_documents(tmp_path):
    text = "---\n" + DEPLOYMENT.format(name="a") + "---\n" + DEPLOYMENT.format(name="b") + "---\n"
    mds = load_manifests([write(tmp_path, "two.yaml", text)])
    assert [md.name for md in mds] == ["a", "b"]
    assert mds[1].spec.model.path == "org/b"


def test_list_kind_is_unwrapped(tmp_path):
    import yaml

    items = [yaml.safe_load(DEPLOYMENT.format(name=n)) for n in ("x", "y")]
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
    assert [md.name for md in load_manifests([write(tmp_path, "list.yaml", text)])] == ["x", "y"]


def test_other_kinds_are_skipped_with_a_warning(tmp_path, caplog):
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n---\n" + DEPLOYMENT.format(
        name="a"
    )
    with caplog.at_level(logging.WARNING, logger="kubechat.manifests"):
        mds = load_manifests([write(tmp_path, "mixed.yaml", text)])
    assert [md.name for md in mds] == ["a"]
    assert "mixed.yaml#1" in caplog.text and "ConfigMap" in caplog.text


def test_errors_name_file_document_and_field(tmp_path):
    bad = DEPLOYMENT.format(name="a") + "  resources:\n    gpus: -1\n  replica: 2\n"
    path = write(tmp_path, "bad.yaml", DEPLOYMENT.format(name="ok") + "---\n" + bad)
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    assert f"{path}#2: spec.resources.gpus: must be >= 0 (got -1)" in info.value.problems
    assert any(p.startswith(f"{path}#2: spec.replica: unknown field") for p in info.value.problems)
    assert len(info.value.problems) == 2
    assert str(info.value).splitlines() == info.value.problems


def test_errors_inside_a_list_name_the_item(tmp_path):
    text = (
        "kind: List\napiVersion: v1\nitems:\n- apiVersion: kubechat.dev/v1alpha1\n"
        "  kind: ModelDeployment\n  metadata: {name: a}\n  spec: {model: {path: x}, replicas: -1}\n"
    )
    path = write(tmp_path, "list.yaml", text)
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    assert info.value.problems == [f"{path}#1: items[0]: spec.replicas: must be >= 0 (got -1)"]


def test_broken_yaml_is_reported_with_the_file(tmp_path):
    path = write(tmp_path, "broken.yaml", "kind: ModelDeployment\nspec: [unclosed\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: invalid YAML")
    assert "line" in problem


def test_problems_from_several_files_are_raised_together(tmp_path):
    a = write(tmp_path, "a.yaml", DEPLOYMENT.format(name="a").replace("org/a", "''"))
    b = write(tmp_path, "b.yaml", "just a string\n")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ManifestError) as info:
        load_manifests([a, b, missing])
    problems = info.value.problems
    assert problems[0] == f"{a}#1: spec.model.path: must not be empty"
    assert problems[1] == f"{b}#1: not a Kubernetes object (no kind)"
    assert problems[2].startswith(f"{missing}: cannot read")


def test_duplicate_names_in_one_namespace_are_an_error(tmp_path):
    one = write(tmp_path, "one.yaml", DEPLOYMENT.format(name="a"))
    two = write(tmp_path, "two.yaml", DEPLOYMENT.format(name="a"))
    with pytest.raises(ManifestError) as info:
        load_manifests([one, two])
    (problem,) = info.value.problems
    assert problem.startswith(f"{two}#1: metadata.name: ModelDeployment default/a")
    assert f"{one}#1" in problem


def test_same_name_in_different_namespaces_is_fine(tmp_path):
    other = DEPLOYMENT.format(name="a").replace("  name: a\n", "  name: a\n  namespace: other\n")
    mds = load_manifests(
        [write(tmp_path, "ns.yaml", DEPLOYMENT.format(name="a") + "---\n" + other)]
    )
    assert [(md.namespace, md.name) for md in mds] == [(None, "a"), ("other", "a")]


def test_a_directory_means_its_manifest_files(tmp_path):
    write(tmp_path, "b.yaml", DEPLOYMENT.format(name="b"))
    write(tmp_path, "a.yml", DEPLOYMENT.format(name="a"))
    write(tmp_path, "notes.txt", "not a manifest")
    assert [md.name for md in load_manifests([tmp_path])] == ["a", "b"]


def test_shipped_examples_load():
    # each example is a standalone choice (demo.yaml and demo-cluster.yaml both define "demo")
    examples = [p for p in (REPO / "examples").glob("*.yaml") if p.name != "bad.yaml"]
    mds = {p.name: load_manifests([p])[0] for p in examples}
    demo = mds["demo.yaml"]
    assert demo.spec.model.path == "kubechat:demo"
    assert demo.model_names == ["kubechat-demo"]
    assert demo.spec.model.trust_remote_code is True
    assert (demo.spec.resources.gpus, demo.spec.replicas) == (0, 2)
    assert mds["demo-cluster.yaml"].spec.replicas == 1
    baichuan = mds["baichuan.yaml"]
    assert baichuan.spec.model.path == "baichuan-inc/Baichuan-13B-Chat"
    assert baichuan.spec.model.trust_remote_code is True
    assert baichuan.spec.model.dtype == "float16"
    assert baichuan.spec.storage.persistent_volume_claim == "models"
    assert baichuan.spec.resources.gpus == 2
    assert baichuan.spec.resources.max_gpu_memory == "20GiB"
    assert baichuan.spec.replicas == 1
    assert baichuan.spec.worker.limit_concurrency == 32


def test_the_readme_invalid_manifest_example_is_what_kubechat_up_prints():
    """README quotes ``examples/bad.yaml#1: ...`` as kubechat up's report: the command run from
    the repository prints exactly that (after the CLI's prefix) on stderr and exits with 2."""
    readme = (REPO / "README.md").read_text()
    quoted = re.search(r"`(examples/bad\.yaml#\d+: [^`]+)`", readme)
    assert quoted, "README no longer quotes examples/bad.yaml's error"
    proc = subprocess.run(
        [sys.executable, "-m", "kubechat.cli", "up", "examples/bad.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"kubechat up: error: {quoted.group(1)}\n"
    assert proc.stdout == ""


def with_path(path: str, name: str = "m") -> str:
    return DEPLOYMENT.format(name=name).replace(f"org/{name}", path)


def test_relative_model_paths_are_read_from_the_manifest_folder(tmp_path, monkeypatch):
    """Not from the working directory: the same manifest means the same model from anywhere."""
    folder = tmp_path / "deploy"
    (folder / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "llama").mkdir(parents=True)
    (folder / "smol.gguf").write_bytes(b"GGUF")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tiny").mkdir(parents=True)  # a decoy where a cwd-relative reading would look
    monkeypatch.chdir(elsewhere)
    docs = [
        with_path("./tiny", "a"),
        with_path("tiny", "b"),
        with_path("../models/llama", "c"),
        with_path("smol.gguf", "d"),
        with_path("org/not-here", "e"),  # nothing of that name beside the manifest: a hub id
        with_path("kubechat:demo", "f"),
        with_path(str(tmp_path / "models" / "llama"), "g"),
    ]
    manifest = write(folder, "models.yaml", "---\n".join(docs))
    paths = [md.spec.model.path for md in load_manifests([Path("../deploy/models.yaml")])]
    assert paths == [
        str(folder / "tiny"),
        str(folder / "tiny"),
        str(tmp_path / "models" / "llama"),
        str(folder / "smol.gguf"),
        "org/not-here",
        "kubechat:demo",
        str(tmp_path / "models" / "llama"),
    ]
    assert manifest.exists()


def test_a_relative_model_path_that_names_nothing_is_a_manifest_error(tmp_path):
    path = write(tmp_path, "m.yaml", with_path("./missing"))
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    assert info.value.problems == [
        f"{path}#1: spec.model.path: ./missing: no such file or folder next to the manifest "
        f"({tmp_path / 'missing'})"
    ]


@pytest.mark.parametrize("relative", ["./tiny", "../models/tiny", ".", "./"])
def test_a_relative_model_path_without_a_manifest_folder_is_invalid(relative):
    """A cluster (the operator parses what kubectl stored) has no folder to read it from."""
    import yaml

    with pytest.raises(SpecError) as info:
        parse_model_deployment(yaml.safe_load(with_path(relative)))
    ((where, message),) = info.value.errors
    assert where == "spec.model.path"
    assert message.startswith(f"{relative} is relative") and "hub id" in message
