"""The shared defaults: the chart's values (YAML cannot import them) say the same."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubechat import defaults
from kubechat.cold_start import HOLD_TIMEOUT

VALUES = Path(__file__).resolve().parents[2] / "charts" / "kubechat" / "values.yaml"


def test_the_charts_values_are_the_shared_defaults() -> None:
    values = yaml.safe_load(VALUES.read_text())
    operator = values["operator"]
    assert operator["leaseRenewInterval"] == defaults.LEASE_RENEW_INTERVAL
    assert operator["leaseDuration"] == defaults.LEASE_DURATION
    assert operator["drainGrace"] == defaults.DRAIN_GRACE
    assert values["workers"]["port"] == defaults.WORKER_PORT
    assert values["gateway"]["holdTimeoutSeconds"] == HOLD_TIMEOUT
