"""Rendered charts shared by the chart tests (helm runs once per values set)."""

from __future__ import annotations

import pytest

from tests.chart.chart_tools import ALL_ON_VALUES, render


@pytest.fixture(scope="session")
def default_docs() -> list[dict]:
    """The chart rendered with its default values."""
    return render()


@pytest.fixture(scope="session")
def all_on_docs() -> list[dict]:
    """The chart rendered with every option on (tests/chart/values-all-on.yaml)."""
    return render(ALL_ON_VALUES)
