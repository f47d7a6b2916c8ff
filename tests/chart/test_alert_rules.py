"""The shipped alert rules: valid for promtool, and firing when (and only when) they should."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.chart.chart_tools import CHART, require_tool

RULES = CHART / "files" / "alerts.yaml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "apt-get install prometheus")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    # No live worker, error ratio and heartbeat lost: each fires on its series and stays quiet
    # before its `for` period and on the healthy series (tests/chart/alerts_test.yaml).
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    # The rule tests are not vacuous: expecting silence where the alert fires fails promtool.
    text = RULE_TESTS.read_text().replace("../../charts/kubechat/files/alerts.yaml", str(RULES))
    broken = text.replace(
        "      - eval_time: 8m\n        alertname: KubechatHeartbeatLost\n        exp_alerts:\n",
        "      - eval_time: 8m\n        alertname: KubechatHeartbeatLost\n        exp_alerts: []\n"
        "      - eval_time: 9m\n        alertname: Unused\n        exp_alerts:\n",
    )
    assert broken != text
    (tmp_path / "broken_test.yaml").write_text(broken)
    result = _promtool("test", "rules", str(tmp_path / "broken_test.yaml"))
    assert result.returncode != 0
