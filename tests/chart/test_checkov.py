"""checkov on the rendered chart, with a skip list that gives a reason for every skip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.chart_tools import ALL_ON_VALUES, render_text, require_tool

SKIPS = Path(__file__).with_name("checkov-skips.yaml")


def test_every_skipped_checkov_check_has_a_reason() -> None:
    config = yaml.safe_load(SKIPS.read_text())
    skipped = config["skip-check"]
    assert skipped, "the skip list is empty: drop the file instead"
    lines = SKIPS.read_text().splitlines()
    for check in skipped:
        index = lines.index(f"  - {check}")
        # The reason is the comment block right above the check or above its group of checks.
        above = index - 1
        while lines[above].startswith("  - "):
            above -= 1
        assert lines[above].strip().startswith("#") and len(lines[above].strip()) > 20, check


@pytest.fixture(scope="module")
def rendered_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart rendered with default values and with every option on, one file each."""
    folder = tmp_path_factory.mktemp("rendered")
    (folder / "defaults.yaml").write_text(render_text())
    (folder / "all-on.yaml").write_text(render_text(ALL_ON_VALUES))
    return folder


def _checkov(folder: Path, *args: str) -> dict:
    checkov = require_tool("checkov", "pip install checkov")
    result = subprocess.run(
        [checkov, "--directory", str(folder), "--output", "json", "--skip-download", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_nothing_on_the_rendered_chart(rendered_folder: Path) -> None:
    report = _checkov(rendered_folder, "--config-file", str(SKIPS), "--quiet")
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert failed == []
    assert report["summary"]["passed"] > 300


def test_every_skipped_check_is_still_needed(rendered_folder: Path) -> None:
    listed = yaml.safe_load(SKIPS.read_text())["skip-check"]
    report = _checkov(rendered_folder, "--framework", "kubernetes", "--check", ",".join(listed))
    failing = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert failing == set(listed), f"no longer failing, drop from the list: {set(listed) - failing}"
