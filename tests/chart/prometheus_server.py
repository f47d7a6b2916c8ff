"""A real Prometheus (Debian's package) on 127.0.0.1 for tests, with a config of the test's own."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import free_port, stop, wait_http


class Prometheus:
    """A running Prometheus: its base URL and a query helper."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on a PromQL error)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def finite(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Series of ``query`` whose value is a finite number (NaN means no data to a reader)."""
        return [s for s in self.query(expr, at) if math.isfinite(float(s["value"][1]))]

    def targets_up(self) -> dict[str, str]:
        """Scrape URL -> health of every active target."""
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return {t["scrapeUrl"]: t["health"] for t in body["data"]["activeTargets"]}

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health and state."""
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]


@contextmanager
def run_prometheus(
    binary: str,
    folder: Path,
    jobs: dict[str, list[str]],
    rule_files: list[Path] = (),
    interval: str = "1s",
) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``jobs`` (job name -> host:port targets) every ``interval``."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)
