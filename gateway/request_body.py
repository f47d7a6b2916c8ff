"""The body of a completions request, read and checked by the gateway itself.

The completion endpoints are plain ASGI (see ``completions.py``), so no FastAPI body parameter
checks their bodies: ``parse_body`` makes the same checks, so a client gets the same 400 as
before: the body must be sent as JSON (``application/json`` or ``application/*+json``), must
parse, and must fit the request model. ``document_endpoints`` puts the endpoints in the OpenAPI
schema, as FastAPI would have.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from kubechat.openai_errors import OpenAIError, validation_error

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], content_type: str | None, body: bytes) -> M:
    """The request ``body`` as ``model``; a 400 OpenAI error naming what is wrong otherwise."""
    if not body:
        raise validation_error([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    if not _is_json(content_type):
        raise validation_error([{"type": "model_attributes_type", "loc": ("body",), "msg": ""}])
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise validation_error(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}]
        ) from None
    except ValueError:  # not UTF-8 (nor UTF-16/32)
        raise OpenAIError(400, "There was an error parsing the body") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def document_endpoints(app: FastAPI, endpoints: dict[str, tuple[type[BaseModel], str]]) -> None:
    """Add POST operations to ``app``'s OpenAPI schema for endpoints that parse their own body:
    ``endpoints`` maps each path to its request model and a summary. The request body is
    documented as a FastAPI body parameter would be (the models' schemas go to the components)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, (model, summary) in endpoints.items():
            doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            schema.setdefault("paths", {}).setdefault(path, {})["post"] = {
                "summary": summary,
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


def _is_json(content_type: str | None) -> bool:
    if content_type == "application/json":
        return True
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
