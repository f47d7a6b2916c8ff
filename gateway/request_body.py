"""The body of a completions request, read and checked by the gateway itself.

The completion endpoints are plain ASGI (see ``completions.py``), so no FastAPI body parameter
checks their bodies: ``parse_body`` makes the same checks, so a client gets the same 400 as
before: the body must be sent as JSON (``application/json`` or ``application/*+json``), must
parse, and must fit the request model.
"""

from __future__ import annotations

import email.message
import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from kubechat.openai_errors import OpenAIError, validation_error

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], content_type: str | None, body: bytes) -> M:
    """The request ``body`` as ``model``; a 400 OpenAI error naming what is wrong otherwise."""
    # The problems FastAPI would have reported are phrased by the same ``validation_error`` that
    # phrases pydantic's, so the gateway and the worker word them alike.
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
