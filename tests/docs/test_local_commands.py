"""The commands the docs give for this machine (``kubechat up`` and what is sent to it), run as
written: one ``kubechat up examples/demo.yaml`` on the default ports serves the README's curl
and Python snippets, which must answer the seed question with K2. A documented ``pip install``
is checked against the environment running the tests (which it made) instead of run again."""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.docs.commands import REPO, Snippet, all_snippets, scenario_of, steps
from tests.docs.shell import DocShell, documented_ports, is_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SEED = "Which mountain is the second highest one in the world?"
_VALUE_FLAGS = ("-i", "--index-url", "--extra-index-url", "-c", "--constraint", "-f")


def local_snippets() -> list[Snippet]:
    """The unmarked snippets of the local scenario, in reading order."""
    return [s for s in all_snippets() if scenario_of(s) == "local" and s.not_run is None]


def test_the_local_commands_run_as_written(demo_model_dir: Path, tmp_path: Path) -> None:
    snippets = local_snippets()
    assert any("kubechat up" in s.text for s in snippets), "no kubechat up found in the docs"
    with documented_ports(), DocShell(tmp_path) as shell:
        for snippet in snippets:
            output = _run(shell, snippet)
            if SEED in snippet.text:
                assert "K2" in output, f"{snippet.where}: no K2 in the answer:\n{output}"
        up = [command for command in shell.servers if command.startswith("kubechat up")]
        assert up, "the docs start no kubechat up"
        for command in up:
            assert shell.stop(command) == 0, f"`{command}` did not stop cleanly on SIGTERM"


def _run(shell: DocShell, snippet: Snippet) -> str:
    if snippet.language == "python":
        return shell.python(snippet.text)
    output = ""
    for command, shown in steps(snippet):
        if command.startswith("pip install"):
            check_pip_install(command)
        elif is_server(command):
            shell.start(command)
        else:
            printed = shell.run(command, check=not shown)
            for line in shown:
                assert line in printed, f"{snippet.where}: `{command}` did not print {line!r}"
            output += printed
    return _answer_text(output)


def _answer_text(output: str) -> str:
    """The assistant's text when ``output`` is a chat completion (curl prints JSON), else as is."""
    try:
        return json.loads(output)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return output


def check_pip_install(command: str) -> None:
    """A documented ``pip install`` made the environment this test runs in: every ``name==x`` is
    installed at that version and ``-e PATH[extras]`` is an editable install of this checkout
    (with its extras' requirements installed)."""
    words = shlex.split(command)[2:]
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-e":
            _check_editable(words[index + 1])
            index += 2
        elif word in _VALUE_FLAGS:
            index += 2
        elif word.startswith("-"):
            index += 1
        else:
            _check_installed(Requirement(word))
            index += 1


def _check_installed(requirement: Requirement) -> None:
    version = importlib.metadata.version(requirement.name)
    assert requirement.specifier.contains(version, prereleases=True), (
        f"the docs install {requirement}, this environment has {requirement.name} {version}"
    )


def _check_editable(target: str) -> None:
    path, _, extras = target.partition("[")
    assert (REPO / path).resolve() == REPO, f"-e {target} is not this checkout"
    # the checkout's own kubechat.egg-info is found too (the repository is on sys.path)
    installed = {
        Path(direct["url"].removeprefix("file://")).resolve(): found
        for found in importlib.metadata.distributions(name="kubechat")
        if (direct := json.loads(found.read_text("direct_url.json") or "{}"))
        .get("dir_info", {})
        .get("editable")
    }
    assert REPO in installed, f"kubechat is not installed with -e from {REPO}: {list(installed)}"
    distribution = installed[REPO]
    for extra in filter(None, extras.rstrip("]").split(",")):
        for text in distribution.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and marker.evaluate({"extra": extra}) and not marker.evaluate({"extra": ""}):
                requirement.marker = None
                _check_installed(requirement)
