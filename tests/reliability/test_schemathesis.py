"""Schema-driven fuzzing (schemathesis) of the worker's and the gateway's OpenAPI schemas.

Every operation in ``/openapi.json`` gets a bounded number of seeded cases, valid ones and ones
that break the schema; no answer may be a 5xx and the server must still be alive afterwards.
Generated valid requests may ask for long completions, so the cases are few per operation.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from .conftest import AUTH, MODEL, Served

# a test dependency (pinned in pyproject.toml's test extra); skipped, not failed, without it
schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

CASES_PER_OPERATION = 50


def fuzz(served: Served, headers: dict[str, str]) -> dict[str, int]:
    """Run the cases; return how many answers each status code got."""
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=headers)
    seen: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    for op in operations:
        # only operations with a body can be sent something that breaks their schema
        modes = list(schemathesis.GenerationMode) if op.method.upper() == "POST" else ["positive"]
        for mode in modes:

            @settings(
                max_examples=CASES_PER_OPERATION,
                derandomize=True,  # seeded: the same cases every run
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
            def one(case) -> None:
                if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
                    # a random name would only ever be a 404: reach the served model's code
                    case.body["model"] = MODEL
                response = case.call(base_url=served.url, headers=headers, timeout=120)
                assert response.status_code < 500, (
                    f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
                    f"\nbody: {case.body!r:.300}"
                )
                key = f"{case.method.upper()} {case.path} {response.status_code}"
                seen[key] = seen.get(key, 0) + 1

            one()
    return seen


def test_worker_schema_fuzzing_finds_no_5xx(real_worker: Served) -> None:
    seen = fuzz(real_worker, {})
    assert any(k.startswith("POST /v1/chat/completions 4") for k in seen), seen
    assert any(k.startswith("POST /v1/completions 200") for k in seen), seen
    assert httpx.get(f"{real_worker.url}/health/ready").status_code == 200


def test_gateway_schema_fuzzing_finds_no_5xx(keyed_gateway: Served) -> None:
    seen = fuzz(keyed_gateway, AUTH)
    assert any(k.startswith("POST /v1/chat/completions 4") for k in seen), seen
    assert any(k.startswith("POST /v1/completions 200") for k in seen), seen
    assert httpx.get(f"{keyed_gateway.url}/health").status_code == 200
