"""OpenAPI entries for the gateway's plain ASGI routes, which FastAPI cannot see.

The completion endpoints are not FastAPI operations (see ``completions.py``), yet clients, SDK
generators and the schema fuzzing tests read their request bodies from ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

from .completions import Completion


def document_endpoints(app: FastAPI, endpoints: Mapping[str, Completion]) -> None:
    """Add a POST operation to ``app``'s OpenAPI schema for each of ``endpoints`` (plain ASGI
    routes, which FastAPI does not document). The request body is documented as a FastAPI body
    parameter would be: the models' schemas go to the components."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, endpoint in endpoints.items():
            model = endpoint.schema
            doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            schema.setdefault("paths", {}).setdefault(path, {})["post"] = {
                "summary": endpoint.summary,
                "operationId": path.strip("/").replace("/", "_") + "_post",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                "responses": {
                    "200": {
                        "description": "The completion: JSON, or server-sent events when streamed",
                        "content": {"application/json": {}, "text/event-stream": {}},
                    }
                },
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
