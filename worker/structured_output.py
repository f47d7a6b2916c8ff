"""``response_format`` as a grammar for the engine: ``json_object`` (any JSON object) and
``json_schema`` (JSON matching the schema; ``strict: true`` also refuses schema keywords that
cannot be enforced) are decoded under the grammar, token by token; ``text`` changes nothing.
A schema the grammar engine cannot use is a 400 naming ``response_format``."""

from __future__ import annotations

from typing import Any

from kubechat.openai_errors import OpenAIError, bad_request
from kubechat.openai_protocol import ResponseFormat

from .grammar import Grammar, GrammarCompiler, GrammarError, grammar_compiler


def compiler_for(tokenizer: Any, stop_token_ids: set[int], param: str) -> GrammarCompiler:
    """The model's grammar compiler; a 400 naming ``param`` when its vocabulary cannot take
    grammars."""
    try:
        return grammar_compiler(tokenizer, stop_token_ids)
    except (GrammarError, ValueError) as exc:
        raise bad_request(f"this model cannot decode under a grammar: {exc}", param) from exc


def response_grammar(
    fmt: ResponseFormat | None, tokenizer: Any, stop_token_ids: set[int]
) -> Grammar | None:
    """The grammar ``response_format`` asks for (None for free text)."""
    if fmt is None or fmt.type == "text":
        return None
    compiler = compiler_for(tokenizer, stop_token_ids, "response_format")
    if fmt.type == "json_object":
        return compiler.json_schema(None)
    spec = fmt.json_schema
    assert spec is not None  # the request model requires it for json_schema
    try:
        return compiler.json_schema(spec.schema_ or {}, strict=bool(spec.strict))
    except GrammarError as exc:
        raise _unusable(exc) from exc


def _unusable(exc: Exception) -> OpenAIError:
    return bad_request(
        f"response_format.json_schema.schema cannot be enforced: {exc}",
        "response_format.json_schema.schema",
    )
