"""Every command the docs give is run by a test of tests/docs/ (its scenario's) or marked
``<!-- not-run: REASON -->`` with a reason; and the extractor those tests rely on finds commands
wherever the docs put them (tests/docs/commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.commands import (
    all_markers,
    all_snippets,
    read,
    scenario_of,
    shell_commands,
    transcript,
)


def test_every_marked_snippet_says_why_it_is_not_run() -> None:
    unexplained = [s.where for s in all_snippets() if s.not_run is not None and not s.not_run]
    assert unexplained == [], "not-run markers need a reason: <!-- not-run: needs ... -->"


def test_every_marker_marks_a_snippet() -> None:
    stray = [f"{m.path}:{m.line}" for m in all_markers() if not m.used]
    assert stray == [], "a not-run marker must come right before the command it marks"


def test_python_snippets_run_where_the_docs_start_a_server() -> None:
    python = [s for s in all_snippets() if s.language == "python"]
    assert [s.where for s in python if scenario_of(s) != "local"] == []


def test_the_readmes_commands_are_found() -> None:
    """The extractor sees the README's blocks and inline commands (a parser change that lost
    them would make every run test pass vacuously)."""
    readme = [s for s in all_snippets() if s.path == "README.md"]
    commands = [c for s in readme if s.language == "shell" for c in shell_commands(s.text)]
    assert "kubechat up examples/demo.yaml" in commands
    assert "kubectl get md" in commands
    assert any(c.startswith("curl -s http://127.0.0.1:8000/v1/chat/completions") for c in commands)
    assert any(s.language == "python" and "OpenAI(" in s.text for s in readme)
    assert {scenario_of(s) for s in readme} == {"local", "chart", "cluster"}


DOC = """\
# Title

Run `kubectl get pods -A` and `kubechat up` (a name), `kubechat up --port --host` (options) or
`kubechat up FILE...` (a synopsis);
<!-- not-run: needs a GPU -->`kubechat worker --model-path x --gpus 2` swallowed as raw HTML,
but <!-- not-run: needs a GPU -->
`kubechat worker --model-path x --gpus 2` is marked.

```
kubechat up a.yaml \\
  --port 9000   # a comment
helm lint charts/x && curl -s 'http://a/#b'
```

<!-- not-run -->
<!-- another comment -->
```bash
docker build .
```

```text
NAME   READY
```

## Python

```python
print("hi")
```

```console
$ kubechat up bad.yaml
bad.yaml#1: spec.replicas: must be >= 0
```

```yaml
spec: {replicas: 1}
```
<!-- not-run: stray -->

Text.
"""


@pytest.fixture
def doc(tmp_path: Path):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    return read(path)


def test_blocks_and_inline_commands_are_extracted(doc) -> None:
    snippets, _ = doc
    assert [(s.line, s.language, s.inline) for s in snippets] == [
        (3, "shell", True),
        (7, "shell", True),
        (9, "shell", False),
        (17, "shell", False),
        (27, "python", False),
        (31, "console", False),
    ]
    assert snippets[0].text == "kubectl get pods -A" and snippets[0].not_run is None
    assert shell_commands(snippets[2].text) == [
        "kubechat up a.yaml   --port 9000",
        "helm lint charts/x",
        "curl -s 'http://a/#b'",
    ]
    assert transcript(snippets[5].text) == [
        ("kubechat up bad.yaml", ["bad.yaml#1: spec.replicas: must be >= 0"])
    ]
    assert snippets[4].section == ("Title", "Python")


def test_markers_apply_to_the_next_snippet_only(doc) -> None:
    snippets, markers = doc
    assert snippets[1].not_run == "needs a GPU"
    assert snippets[2].not_run is None
    assert snippets[3].not_run == ""  # marked without a reason: the check above fails it
    assert [(m.line, m.used) for m in markers] == [(5, False), (6, True), (15, True), (39, False)]
