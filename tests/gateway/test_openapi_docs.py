"""The completion endpoints are plain ASGI routes; /openapi.json still documents them."""

from __future__ import annotations

from pathlib import Path

import httpx

from .harness import gateway


def test_the_schema_documents_every_request_body(tmp_path: Path) -> None:
    with gateway(tmp_path, {"a": "ok"}) as gw:
        schema = httpx.get(f"{gw.url}/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, name, field in [
        ("/v1/chat/completions", "ChatCompletionRequest", "messages"),
        ("/v1/completions", "CompletionRequest", "prompt"),
        ("/v1/embeddings", "EmbeddingRequest", "input"),
    ]:
        body = schema["paths"][path]["post"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{name}"
        assert field in components[name]["properties"]
        assert "model" in components[name]["required"]
    # every reference in the document resolves
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert refs <= set(components)
